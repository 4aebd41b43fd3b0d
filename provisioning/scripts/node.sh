#!/usr/bin/env bash
# Every Kubernetes node (controllers and workers), before its role's script:
#   swap off, kernel modules and sysctls (forwarding!), the packages and binaries a node
#   needs, and the load balancer as the only nameserver (systemd-resolved off).
# Safe to re-run. Run as root: LAB_NODE=worker-0 bash node.sh
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
cd /    # nothing depends on the directory this was started from
: "${LAB_NODE:=$(hostname)}"
[[ $(id -u) == 0 ]] || die "run as root"

log "1/5 swap off (the kubelet refuses to run with swap)"
swapoff -a
comment_out_swap /etc/fstab

log "2/5 kernel modules and sysctls"
render_kernel_settings /
modprobe overlay
modprobe br_netfilter
sysctl --quiet --system >/dev/null
check_forwarding || die "see the message above"

log "3/5 packages from Debian"
apt_install ca-certificates curl conntrack iptables ipset socat ethtool

log "4/5 containerd, runc, CNI plugins, crictl, kubelet $KUBERNETES_VERSION"
install_container_runtime
install_kube_binary kubelet
install_kube_binary kubectl

log "5/5 resolver: $LB_VIP (node names from nodehosts, the rest forwarded)"
if systemctl is-enabled --quiet systemd-resolved 2>/dev/null; then
    systemctl disable --now systemd-resolved
fi
[[ -L /etc/resolv.conf ]] && rm -f /etc/resolv.conf
render_resolver / "$LB_VIP"
if ! getent ahostsv4 registry.k8s.io >/dev/null; then
    log "WARNING: $LB_VIP does not resolve registry.k8s.io; images will not pull. On the LB:"
    log "  systemctl status coredns nodehosts; dig @$LB_VIP registry.k8s.io"
fi

# Keep the scripts on the machine, for the label-nodes timer, smoke.sh and
# troubleshoot-static-pod.sh later.
if [[ $LAB_DIR != "$LAB_INSTALL_DIR" ]]; then
    mkdir -p "$LAB_INSTALL_DIR"
    cp -a "$LAB_DIR/." "$LAB_INSTALL_DIR/"
fi
log "node setup done"
