#!/usr/bin/env bash
# The cluster add-ons, from a controller (controller.sh runs it on the last one):
#   bootstrap token + TLS-bootstrapping RBAC, apiserver->kubelet RBAC, nodehosts' RBAC,
#   kube-proxy, Calico (upstream's manifest, patched: host-local IPAM from the node podCIDRs),
#   CoreDNS at CLUSTER_DNS_IP, metrics-server; then node labels and taints, kept up to date
#   by a timer.
# Safe to re-run (kubectl apply). Run as root on a controller.
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
cd /    # nothing depends on the directory this was started from
: "${LAB_NODE:=$(hostname)}"
[[ $(id -u) == 0 ]] || die "run as root"

# The local apiserver: the add-ons do not depend on the LB being up.
kubectl() { command kubectl --kubeconfig=/etc/kubernetes/admin.kubeconfig --server=https://127.0.0.1:6443 "$@"; }

log "1/4 waiting for the API (etcd needs a quorum of the controllers)"
for (( i = 0; i < 90; i++ )); do
    kubectl get --raw=/readyz >/dev/null 2>&1 && break
    sleep 5
done
kubectl get --raw='/readyz?verbose' >/dev/null || die "the apiserver is not ready after 7.5 minutes: run troubleshoot-static-pod.sh kube-apiserver"

log "2/4 rendering the add-ons into /etc/kubernetes/addons; Calico $CALICO_VERSION from upstream"
render_addons /etc/kubernetes/addons /etc/kubernetes/pki
apt_install python3 python3-yaml      # the Calico patch step
fetch_calico_manifest "$LAB_CACHE/calico-$CALICO_VERSION.yaml"
render_calico "$LAB_CACHE/calico-$CALICO_VERSION.yaml" /etc/kubernetes/addons/20-calico.yaml

log "3/4 applying"
# Server-side: Calico's CRDs are too large for client-side apply's last-applied annotation.
kubectl apply --server-side --force-conflicts --field-manager=kubernetes-lab -f /etc/kubernetes/addons/ >/dev/null

log "4/4 node labels and taints now, and every 30 s for nodes that join later"
bash "$LAB_DIR/scripts/label-nodes.sh"
if [[ -d /etc/systemd/system ]]; then
    render_label_nodes_timer /
    systemctl daemon-reload
    systemctl enable --now --quiet lab-label-nodes.timer
fi
log "add-ons applied. kubectl get nodes,pods -A -o wide; kubectl get csr"
log "when the workers are up: $LAB_INSTALL_DIR/scripts/smoke.sh"
