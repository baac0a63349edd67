fetch_token() {
    # IMDSv2 session, the instance role's temporary credentials, then the SecureString
    # parameter from SSM's API, signed by curl itself (--aws-sigv4): no AWS CLI needed.
    curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' -o "$WORK/imds-token" \
        http://169.254.169.254/latest/api/token || return
    printf 'X-aws-ec2-metadata-token: %s\n' "$(<"$WORK/imds-token")" >"$WORK/imds-header" || return
    local role
    role=$(curl -fsS -H "@$WORK/imds-header" http://169.254.169.254/latest/meta-data/iam/security-credentials/) || return
    curl -fsS -H "@$WORK/imds-header" -o "$WORK/role.json" \
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/$role" || return
    jq -r '"user = \"\(.AccessKeyId):\(.SecretAccessKey)\"", "header = \"X-Amz-Security-Token: \(.Token)\""' \
        "$WORK/role.json" >"$WORK/sigv4.curlrc" || return
    curl -fsS -K "$WORK/sigv4.curlrc" --aws-sigv4 'aws:amz:${region}:ssm' \
        -H 'X-Amz-Target: AmazonSSM.GetParameter' -H 'Content-Type: application/x-amz-json-1.1' \
        --data '{"Name": "${token_parameter}", "WithDecryption": true}' \
        -o "$WORK/parameter.json" 'https://ssm.${region}.amazonaws.com/' || return
    jq -er .Parameter.Value "$WORK/parameter.json" >"$TOKEN_FILE"
}
