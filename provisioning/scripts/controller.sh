#!/usr/bin/env bash
# A controller: the kubelet runs etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler as static pods from /etc/kubernetes/manifests. Runs after node.sh.
# The last controller (etcd has its quorum then) waits for the API and applies the add-ons.
# Safe to re-run. Run as root: LAB_NODE=controller-0 LAB_BUNDLE=/tmp/lab/bundle bash controller.sh
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
cd /    # nothing depends on the directory this was started from
: "${LAB_NODE:=$(hostname)}"
: "${LAB_BUNDLE:=/tmp/lab/bundle}"
[[ $(id -u) == 0 ]] || die "run as root"
[[ $LAB_NODE == controller-* ]] || die "LAB_NODE=$LAB_NODE is not a controller"

ip=$(node_ip "$LAB_NODE")
[[ $(private_ip) == "$ip" ]] || die "expected $ip on the private network, found $(private_ip)"

log "1/4 secrets: certificates, keys and kubeconfigs from the host"
install_bundle "$LAB_BUNDLE"

log "2/4 containerd"
render_containerd /
service_up containerd /etc/containerd/config.toml /etc/systemd/system/containerd.service

log "3/4 kubelet and the static pod manifests"
render_kubelet / "$LAB_NODE" "$ip"
render_static_pods / "$LAB_NODE"
service_up kubelet /var/lib/kubelet/config.yaml /etc/systemd/system/kubelet.service \
    /etc/default/kubelet /var/lib/kubelet/kubeconfig /etc/kubernetes/pki/ca.crt

log "4/4 add-ons"
if [[ $LAB_NODE == "controller-$(( CONTROLLER_COUNT - 1 ))" ]]; then
    bash "$LAB_DIR/scripts/addons.sh"
else
    log "the add-ons are applied by controller-$(( CONTROLLER_COUNT - 1 )), once etcd has a quorum"
fi
log "controller $LAB_NODE done. If a static pod does not start:"
log "  sudo /opt/lab/provisioning/scripts/troubleshoot-static-pod.sh kube-apiserver"
