#cloud-config
# AAMI bootstrap at first boot (Azure custom_data, rendered by Terraform's templatefile).
package_update: true
packages: [curl, jq]
write_files:
  # The token goes to a root-only file, never onto a command line or into a log.
  - path: /root/.aami-token
    permissions: '0600'
    owner: root:root
    content: |
      ${bootstrap_token}
  - path: /root/aami-bootstrap-run.sh
    permissions: '0700'
    owner: root:root
    content: |
      #!/bin/bash
      set -euo pipefail
      umask 077
      exec >>/var/log/aami-bootstrap.log 2>&1
      echo "AAMI bootstrap starting at $(date -Is)"
      CONFIG_SERVER_URL='${config_server_url}'
      trap 'rm -f /root/.aami-token' EXIT
      for attempt in 1 2 3 4 5; do
          if curl -fsSL "$CONFIG_SERVER_URL/bootstrap.sh" -o /root/aami-bootstrap.sh; then break; fi
          echo "config server not reachable yet (attempt $attempt)"; sleep 10
      done
      bash /root/aami-bootstrap.sh --token-file /root/.aami-token --server "$CONFIG_SERVER_URL" --label "cloud=azure" --label "vm_size=${vm_size}"
      echo "AAMI bootstrap done at $(date -Is)"
runcmd:
  - [bash, /root/aami-bootstrap-run.sh]
