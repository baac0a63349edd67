fetch_token() {
    # An access token of the VM's service account from the metadata server, then the
    # secret's latest version from Secret Manager.
    curl -fsS -H 'Metadata-Flavor: Google' -o "$WORK/access.json" \
        'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token' || return
    jq -r '"Authorization: Bearer \(.access_token)"' "$WORK/access.json" >"$WORK/auth-header" || return
    curl -fsS -H "@$WORK/auth-header" -o "$WORK/secret.json" \
        'https://secretmanager.googleapis.com/v1/${token_secret}/versions/latest:access' || return
    jq -er .payload.data "$WORK/secret.json" | base64 -d >"$TOKEN_FILE"
}
