#!/usr/bin/env bash
# The cluster add-ons, from a controller (controller.sh runs it on the last one):
#   bootstrap token + TLS-bootstrapping RBAC, apiserver->kubelet RBAC, nodehosts' RBAC,
#   kube-proxy, Calico (host-local IPAM from the node podCIDRs), CoreDNS at CLUSTER_DNS_IP,
#   metrics-server; then node labels and taints, kept up to date by a timer.
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

log "2/4 rendering the add-ons into /etc/kubernetes/addons"
render_addons /etc/kubernetes/addons /etc/kubernetes/pki
url=$(calico_crds_url)
if [[ ! -s $LAB_CACHE/calico-crds-$CALICO_VERSION.yaml ]]; then
    mkdir -p "$LAB_CACHE"
    curl -fsSL --retry 3 -o "$LAB_CACHE/calico-crds-$CALICO_VERSION.yaml.part" "$url"
    mv "$LAB_CACHE/calico-crds-$CALICO_VERSION.yaml.part" "$LAB_CACHE/calico-crds-$CALICO_VERSION.yaml"
fi

log "3/4 applying"
# Calico's CRDs are too large for client-side apply's last-applied annotation.
kubectl apply --server-side --force-conflicts -f "$LAB_CACHE/calico-crds-$CALICO_VERSION.yaml" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/ippools.crd.projectcalico.org >/dev/null
kubectl apply -f /etc/kubernetes/addons/

log "4/4 node labels and taints now, and every 30 s for nodes that join later"
bash "$LAB_DIR/scripts/label-nodes.sh"
if [[ -d /etc/systemd/system ]]; then
    update_file /etc/systemd/system/lab-label-nodes.service 0644 <<EOF
[Unit]
Description=Kubernetes lab: role labels and the control-plane taint (kubectl)
[Service]
Type=oneshot
ExecStart=/bin/bash $LAB_DIR/scripts/label-nodes.sh
EOF
    update_file /etc/systemd/system/lab-label-nodes.timer 0644 <<'EOF'
[Unit]
Description=Kubernetes lab: label nodes as they join
[Timer]
OnActiveSec=30s
OnUnitActiveSec=30s
[Install]
WantedBy=timers.target
EOF
    systemctl daemon-reload
    systemctl enable --now --quiet lab-label-nodes.timer
fi
log "add-ons applied. kubectl get nodes,pods -A -o wide; kubectl get csr"
