#!/bin/bash
# AAMI bootstrap at a VM's first boot (${cloud}), rendered by Terraform's templatefile() in
# startup/main.tf. The bootstrap token is not in this script: the VM reads it from the
# cloud's secret store when it boots, so a new token changes the secret, never this script,
# and no running VM is replaced or restarted (deploy/terraform/README.md).
set -euo pipefail
umask 077
exec >>/var/log/aami-bootstrap.log 2>&1
echo "AAMI bootstrap starting at $(date -Is)"

CONFIG_SERVER_URL='${config_server_url}'
WORK=$(mktemp -d /root/.aami-bootstrap.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TOKEN_FILE="$WORK/token"

if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then apt-get update -qq && apt-get install -y -qq curl jq; fi

# A step that fails while the VM's identity, its permission on the secret or the config
# server is not there yet is tried again: up to 30 times, 10 s apart.
retry() {
    local attempt
    for attempt in $(seq 30); do
        if "$@"; then return 0; fi
        echo "$1 failed (attempt $attempt of 30)"
        sleep 10
    done
    return 1
}

# fetch_token writes the token to $TOKEN_FILE. The token and the credentials that read it
# go through root-only files (curl -H @file, -K file): never a command line, never this log.
# It runs under `if`, where set -e does not apply: every step says `|| return`.
${fetch_token}

retry fetch_token
retry curl -fsSL "$CONFIG_SERVER_URL/bootstrap.sh" -o "$WORK/bootstrap.sh"
bash "$WORK/bootstrap.sh" --token-file "$TOKEN_FILE" --server "$CONFIG_SERVER_URL" --label 'cloud=${cloud}' --label 'instance_type=${instance_type}'
echo "AAMI bootstrap done at $(date -Is)"
