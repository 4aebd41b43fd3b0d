#!/usr/bin/env bash
# render.sh OUTDIR: every file the lab generates, for the topology in cluster.env, without any
# VM or network, with the same functions the machines' scripts run. Tests check OUTDIR; you
# can read it to see what each machine gets.
#
#   OUTDIR/pki/                 the lab's PKI (stays on the host)
#   OUTDIR/kubeconfigs/         every kubeconfig
#   OUTDIR/nodes/<machine>/     what each machine gets, laid out like its root file system:
#                               its secrets bundle plus every file its script writes
#   OUTDIR/addons/              the add-on manifests, applied from a controller; Calico's
#                               (20-calico.yaml) only when given upstream's manifest:
#                               RENDER_CALICO_MANIFEST=path/to/calico.yaml (no download here;
#                               by default $LAB_BINARIES/calico.yaml when that exists)
#
# Re-running keeps the PKI (and re-issues only certificates whose content changed).
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/lib/all.sh"
lab_load_env

out=${1:?usage: render.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Fixed stand-ins for what a machine finds out at run time.
: "${RENDER_WORKER_IP_START:=101}"                  # workers' first DHCP leases
: "${RENDER_UPSTREAM_DNS:=10.0.2.3}"                # VirtualBox NAT's resolver
: "${RENDER_PRIVATE_IFACE:=eth1}"
: "${RENDER_CALICO_MANIFEST:=${LAB_BINARIES:+$LAB_BINARIES/calico.yaml}}"

secrets_generate_all "$out"

for name in $(lb_names); do
    root=$out/nodes/$name
    render_haproxy "$root"
    # shellcheck disable=SC2086  # one upstream per word
    render_nodehosts_config "$root" "$name" $RENDER_UPSTREAM_DNS
    if [[ $DNS_MODE == coredns ]]; then
        # shellcheck disable=SC2086
        render_coredns "$root" $RENDER_UPSTREAM_DNS
    fi
    if (( LB_COUNT > 1 )); then render_keepalived "$root" "$name" "$RENDER_PRIVATE_IFACE"; fi
done

i=0
for name in $(controller_names) $(worker_names); do
    root=$out/nodes/$name
    render_kernel_settings "$root"
    render_resolver "$root" "$LB_VIP"
    render_containerd "$root"
    case $name in
        controller-*)
            render_kubelet "$root" "$name" "$(node_ip "$name")"
            render_static_pods "$root" "$name"
            if [[ $name == "controller-$(( CONTROLLER_COUNT - 1 ))" ]]; then render_label_nodes_timer "$root"; fi
            ;;
        worker-*)
            render_kubelet "$root" "$name" "$NODE_NET_PREFIX.$(( RENDER_WORKER_IP_START + i ))"
            i=$(( i + 1 ))
            ;;
    esac
done

render_addons "$out/addons" "$out/pki"
if [[ -n $RENDER_CALICO_MANIFEST && -f $RENDER_CALICO_MANIFEST ]]; then
    render_calico "$RENDER_CALICO_MANIFEST" "$out/addons/20-calico.yaml"
else
    log "no Calico manifest given (RENDER_CALICO_MANIFEST): addons/20-calico.yaml not rendered"
fi
log "rendered into $out"
