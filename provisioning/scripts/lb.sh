#!/usr/bin/env bash
# A load balancer (lb-0, and lb-1 with LB_COUNT=2):
#   haproxy  :6443 -> the controllers' apiservers
#   nodehosts (this repository's Debian package) watches the Nodes and writes the hosts file,
#            approves kubelet serving certificates, and in DNS_MODE=nodehosts answers DNS
#   CoreDNS  :53 (DNS_MODE=coredns): node names from nodehosts' file, the rest forwarded
#   keepalived holds LB_VIP when there are two LBs
# Only Debian packages in DNS_MODE=nodehosts (CoreDNS is a download from its release page,
# or LAB_BINARIES/coredns: provisioning/README.md, offline installs).
# Safe to re-run, also to switch DNS_MODE. Run as root:
#   LAB_NODE=lb-0 LAB_BUNDLE=/tmp/lab/bundle NODEHOSTS_DEB=/tmp/lab/nodehosts.deb bash lb.sh
# Other settings: UPSTREAM_DNS ("ip ip" or "none"), NODEHOSTS_DNS_LISTEN ("ip:53 ..."),
# LB_SELF_RESOLVE (yes: this machine's resolver becomes its own DNS server),
# COREDNS_LISTEN ("ip ...": CoreDNS binds only these; default every address).
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
cd /    # nothing depends on the directory this was started from
: "${LAB_NODE:=$(hostname)}"
: "${LAB_BUNDLE:=/tmp/lab/bundle}"
: "${NODEHOSTS_DEB:=/tmp/lab/nodehosts.deb}"
: "${LB_SELF_RESOLVE:=yes}"
[[ $(id -u) == 0 ]] || die "run as root"
[[ $LAB_NODE == lb-* ]] || die "LAB_NODE=$LAB_NODE is not a load balancer"

# Before anything changes /etc/resolv.conf: where names that are not nodes get resolved.
read -r -a upstreams <<<"$(upstream_resolvers)"
update_file /etc/kubernetes-lab/upstream.resolv.conf 0644 < <(
    echo "# The upstream resolvers this LB found on its first run (provisioning/scripts/lb.sh)."
    for server in "${upstreams[@]}"; do echo "nameserver $server"; done
)

log "1/6 packages: haproxy, dig, nodehosts from $NODEHOSTS_DEB"
packages=(haproxy bind9-dnsutils ca-certificates)
(( LB_COUNT > 1 )) && packages+=(keepalived)
[[ $DNS_MODE == coredns && -z ${LAB_BINARIES:-} ]] && packages+=(curl)
apt_install "${packages[@]}"
[[ -f $NODEHOSTS_DEB ]] || die "no nodehosts package at $NODEHOSTS_DEB (provisioning/host.sh builds it)"
deb_version=$(dpkg-deb -f "$NODEHOSTS_DEB" Version)
if [[ $(dpkg-query -W -f='${Version}' nodehosts 2>/dev/null || true) != "$deb_version" ]]; then
    log "installing nodehosts $deb_version"
    apt-get update -qq
    # --force-confold: keep our /etc/nodehosts/config.toml, never ask, on an upgrade.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
        -o Dpkg::Options::=--force-confold "$NODEHOSTS_DEB" >/dev/null
fi

log "2/6 secrets: nodehosts' kubeconfig, the CA for haproxy's health checks"
[[ -f $LAB_BUNDLE/etc/nodehosts/kubeconfig ]] || die "no $LAB_BUNDLE/etc/nodehosts/kubeconfig (run host.sh)"
# The kubeconfig is readable by the service's user, nobody else.
update_file /etc/nodehosts/kubeconfig 0640 root:nodehosts <"$LAB_BUNDLE/etc/nodehosts/kubeconfig"
update_file /etc/haproxy/kubernetes-ca.crt 0644 <"$LAB_BUNDLE/etc/haproxy/kubernetes-ca.crt"

log "3/6 haproxy for the API on :6443"
render_haproxy /
haproxy -c -q -f /etc/haproxy/haproxy.cfg || die "haproxy rejects /etc/haproxy/haproxy.cfg"
service_up haproxy /etc/haproxy/haproxy.cfg /etc/haproxy/kubernetes-ca.crt

if (( LB_COUNT > 1 )); then
    log "     keepalived: $LB_VIP by VRRP"
    # Both LBs bind LB_VIP:53 and :6443 whether or not they hold it right now.
    update_file /etc/sysctl.d/90-kubernetes-lab-lb.conf 0644 <<<"net.ipv4.ip_nonlocal_bind = 1"
    sysctl --quiet --system >/dev/null
    render_keepalived / "$LAB_NODE" "$(private_interface)"
    service_up keepalived /etc/keepalived/keepalived.conf
fi

log "4/6 nodehosts (DNS_MODE=$DNS_MODE, upstreams: ${upstreams[*]:-none})"
render_nodehosts_config / "$LAB_NODE" "${upstreams[@]}"
nodehosts check-config --config /etc/nodehosts/config.toml >/dev/null
if [[ $DNS_MODE == nodehosts ]] && systemctl is-active --quiet coredns 2>/dev/null; then
    log "     stopping CoreDNS: nodehosts takes port 53"
    systemctl disable --now --quiet coredns
fi
# Not waiting for "ready": before the cluster exists, nodehosts waits for the API.
LAB_NO_BLOCK=1 service_up nodehosts /etc/nodehosts/config.toml /etc/nodehosts/static-hosts /etc/nodehosts/kubeconfig

if [[ $DNS_MODE == coredns ]]; then
    log "5/6 CoreDNS $COREDNS_VERSION on :53, reading $NODEHOSTS_HOSTS_FILE"
    case $COREDNS_VERSION in 1.14.5|1.14.6)
        log "WARNING: CoreDNS $COREDNS_VERSION forwards TXT/HTTPS/... queries for node names upstream (coredns/README.md)" ;;
    esac
    install_coredns
    render_coredns / "${upstreams[@]}"
    update_file /etc/coredns/bind.d/lab.conf 0644 < <(
        if [[ -n ${COREDNS_LISTEN:-} ]]; then echo "bind $COREDNS_LISTEN"
        else echo "# every address (COREDNS_LISTEN unset; provisioning/scripts/lb.sh)"; fi
    )
    # Not waiting either: coredns.service is ordered after nodehosts, which stays
    # "activating" until the API answers (the LB comes up before the controllers).
    LAB_NO_BLOCK=1 service_up coredns /etc/coredns/Corefile /etc/coredns/upstream.resolv.conf \
        /etc/coredns/bind.d/lab.conf /etc/systemd/system/coredns.service
else
    log "5/6 nodehosts answers DNS itself; CoreDNS is not used"
fi

log "6/6 checks"
if [[ $LB_SELF_RESOLVE == yes ]]; then
    render_resolver / 127.0.0.1
fi
dns_server=127.0.0.1
if [[ $DNS_MODE == coredns && -n ${COREDNS_LISTEN:-} ]]; then
    dns_server=${COREDNS_LISTEN%% *}
elif [[ $DNS_MODE == nodehosts ]]; then
    read -r first_listen _ <<<"$(nodehosts_dns_listen "$LAB_NODE")"
    dns_server=${first_listen%:*}
fi
# nodehosts was (re)started without waiting: give it a moment to settle before judging.
for unit in haproxy nodehosts; do
    for (( i = 0; i < 20; i++ )); do
        state=$(systemctl is-active "$unit" || true)
        [[ $state == active || $state == activating ]] && break
        sleep 1
    done
    [[ $state == active || $state == activating ]] || die "$unit is $state: journalctl -u $unit"
done
for (( i = 0; i < 15; i++ )); do
    dig +time=1 +tries=1 "@$dns_server" . SOA >/dev/null 2>&1 && break
    sleep 1
done
dig +time=1 +tries=1 "@$dns_server" . SOA >/dev/null 2>&1 \
    || log "WARNING: no DNS answer from $dns_server:53 yet: systemctl status coredns nodehosts"
log "LB $LAB_NODE done. Node names appear once the API is up: dig @127.0.0.1 controller-0 +short"
