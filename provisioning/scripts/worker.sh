#!/usr/bin/env bash
# A worker: containerd and a kubelet that joins by TLS bootstrapping. It holds only the
# cluster CA and a bootstrap token; the kubelet asks for its client certificate (approved by
# kube-controller-manager) and for its serving certificate (approved by nodehosts on the LB,
# after checking the names and addresses against the Node). Runs after node.sh.
# Safe to re-run. Run as root: LAB_NODE=worker-0 LAB_BUNDLE=/tmp/lab/bundle bash worker.sh
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
cd /    # nothing depends on the directory this was started from
: "${LAB_NODE:=$(hostname)}"
: "${LAB_BUNDLE:=/tmp/lab/bundle}"
[[ $(id -u) == 0 ]] || die "run as root"
[[ $LAB_NODE == worker-* ]] || die "LAB_NODE=$LAB_NODE is not a worker"

ip=$(private_ip)     # from DHCP; the dhclient hook follows later changes
log "1/3 secrets: the cluster CA and the bootstrap kubeconfig"
install_bundle "$LAB_BUNDLE"

log "2/3 containerd"
render_containerd /
service_up containerd /etc/containerd/config.toml /etc/systemd/system/containerd.service

log "3/3 kubelet, node IP $ip"
render_kubelet / "$LAB_NODE" "$ip"
service_up kubelet /var/lib/kubelet/config.yaml /etc/systemd/system/kubelet.service \
    /etc/default/kubelet /var/lib/kubelet/bootstrap-kubeconfig

log "worker $LAB_NODE done. From a controller: kubectl get nodes; kubectl get csr"
