fetch_token() {
    # An access token of the VM's managed identity for Key Vault from the instance metadata
    # service, then the secret's current version from the vault.
    curl -fsS -H 'Metadata: true' -o "$WORK/access.json" \
        'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net' || return
    jq -r '"Authorization: Bearer \(.access_token)"' "$WORK/access.json" >"$WORK/auth-header" || return
    curl -fsS -H "@$WORK/auth-header" -o "$WORK/secret.json" '${token_secret_url}?api-version=7.4' || return
    jq -er .value "$WORK/secret.json" >"$TOKEN_FILE"
}
