#!/usr/bin/env bash
# A fresh bootstrap token, for workers that join after the first one expired (it expires
# BOOTSTRAP_TOKEN_TTL_HOURS after the add-ons were applied; kube-controller-manager's
# tokencleaner then deletes it). On a controller, as root: creates the token's Secret (with
# its own expiry) and prints it in the format of provisioning/generated/pki/bootstrap-token.env.
# From the host (README: "Adding a worker later"):
#   vagrant ssh controller-0 --no-tty -c 'sudo /opt/lab/provisioning/scripts/bootstrap-token.sh' \
#       > generated/pki/bootstrap-token.env
#   WORKER_COUNT=4 ./host.sh && WORKER_COUNT=4 vagrant up worker-3
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
: "${LAB_NODE:=$(hostname)}"
: "${LAB_KUBECONFIG:=/etc/kubernetes/admin.kubeconfig}"

id=$(openssl rand -hex 3)          # [a-z0-9]{6}, as pki_bootstrap_token makes them
secret=$(openssl rand -hex 8)      # [a-z0-9]{16}
expiration=$(bootstrap_token_expiration)
bootstrap_token_secret "$id" "$secret" "$expiration" \
    | kubectl --kubeconfig="$LAB_KUBECONFIG" apply -f - >/dev/null
log "bootstrap token $id created; valid until $expiration"
printf 'BOOTSTRAP_TOKEN_ID=%s\nBOOTSTRAP_TOKEN_SECRET=%s\n' "$id" "$secret"
