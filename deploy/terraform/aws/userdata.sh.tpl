#!/bin/bash
# AAMI bootstrap at first boot (EC2 user_data, rendered by Terraform's templatefile).
set -euo pipefail
umask 077
exec >>/var/log/aami-bootstrap.log 2>&1
echo "AAMI bootstrap starting at $(date -Is)"

CONFIG_SERVER_URL='${config_server_url}'
TOKEN_FILE=$(mktemp /root/.aami-token.XXXXXX)
trap 'rm -f "$TOKEN_FILE"' EXIT
# The token goes to a root-only file, never onto a command line or into the log.
cat >"$TOKEN_FILE" <<'TOKEN'
${bootstrap_token}
TOKEN

if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then apt-get update -qq && apt-get install -y -qq curl jq; fi
for attempt in 1 2 3 4 5; do
    if curl -fsSL "$CONFIG_SERVER_URL/bootstrap.sh" -o /root/aami-bootstrap.sh; then break; fi
    echo "config server not reachable yet (attempt $attempt)"; sleep 10
done
bash /root/aami-bootstrap.sh --token-file "$TOKEN_FILE" --server "$CONFIG_SERVER_URL" --label "cloud=aws" --label "instance_type=${instance_type}"
echo "AAMI bootstrap done at $(date -Is)"
