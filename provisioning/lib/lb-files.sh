# shellcheck shell=bash
# Files of a load balancer: haproxy for the API, nodehosts' configuration, CoreDNS (or
# nodehosts' own DNS server), and keepalived when there are two LBs.

NODEHOSTS_HOSTS_FILE=/var/lib/nodehosts/hosts/nodes.hosts   # CoreDNS reads this (coredns/Corefile)

render_haproxy() {
    local root=$1 name
    update_file "$root/etc/haproxy/haproxy.cfg" 0644 < <(
        cat <<'EOF'
# The Kubernetes API on :6443, passed through (TLS ends at the apiservers) to the controllers.
global
    log /dev/log local0
    user haproxy
    group haproxy
    maxconn 4000

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    # Watches stay open for many minutes.
    timeout client 1h
    timeout server 1h

frontend kube-apiserver
    bind :6443
    default_backend kube-apiserver

backend kube-apiserver
    # Health: GET /readyz over TLS, checking the apiserver's certificate against the cluster CA.
    option httpchk GET /readyz
    http-check expect status 200
    balance roundrobin
    default-server check check-ssl verify required ca-file /etc/haproxy/kubernetes-ca.crt inter 5s fall 3 rise 2
EOF
        for name in $(controller_names); do
            printf '    server %s %s:6443\n' "$name" "$(node_ip "$name")"
        done
    )
}

# The addresses nodehosts' DNS server listens on in DNS_MODE=nodehosts: the VIP, this LB's
# own address, loopback. NODEHOSTS_DNS_LISTEN (space-separated host:port) overrides them.
nodehosts_dns_listen() {
    local name=$1
    if [[ -n ${NODEHOSTS_DNS_LISTEN:-} ]]; then echo "$NODEHOSTS_DNS_LISTEN"; return; fi
    local own
    own=$(node_ip "$name")
    if [[ $own == "$LB_VIP" ]]; then echo "$LB_VIP:53 127.0.0.1:53"; else echo "$LB_VIP:53 $own:53 127.0.0.1:53"; fi
}

# toml_strings WORD...: ["a", "b"]
toml_strings() {
    local out=() word
    for word in "$@"; do out+=("\"$word\""); done
    echo "[$(join_by , "${out[@]}" | sed 's/,/, /g')]"
}

# render_nodehosts_config ROOT NAME UPSTREAM...
render_nodehosts_config() {
    local root=$1 name=$2; shift 2
    local upstreams=("$@") listen=() mode_comment
    if [[ $DNS_MODE == nodehosts ]]; then
        read -r -a listen <<<"$(nodehosts_dns_listen "$name")"
        mode_comment="nodehosts answers DNS itself (DNS_MODE=nodehosts); CoreDNS is not installed."
    else
        mode_comment="CoreDNS answers DNS from the hosts file below (DNS_MODE=coredns)."
    fi
    update_file "$root/etc/nodehosts/config.toml" 0644 <<EOF
# nodehosts on $name. Written by provisioning/scripts/lb.sh; see nodehosts(1).
# $mode_comment

[kubernetes]
# A client certificate with CN=nodehosts, through this LB's own haproxy (127.0.0.1:6443).
kubeconfig = "/etc/nodehosts/kubeconfig"

[records]
domain = "$NODE_DOMAIN"
# The load balancers are no Kubernetes nodes: their names come from this file.
static_hosts = "/etc/nodehosts/static-hosts"

[hosts]
# CoreDNS's hosts plugin reads this file (coredns/Corefile). Give a containerised CoreDNS
# the directory, never the file: the atomic rename is invisible through a file bind mount.
file = "$NODEHOSTS_HOSTS_FILE"

[dns]
listen = $(toml_strings "${listen[@]}")
upstream = $(toml_strings "${upstreams[@]}")
# $POD_CIDR never reaches this LB as a source: pods' traffic to the node network leaves their
# node through Calico's NAT (natOutgoing), with the node's address. It is listed only so that
# a pod network without that NAT keeps working; the node network is what matters.
allow_recursion_from = $(toml_strings "$NODE_CIDR" "$POD_CIDR" 127.0.0.0/8 ::1/128)

[metrics]
listen = "127.0.0.1:9154"

[csr]
# Approve the kubelets' serving certificates (serverTLSBootstrap) after checking every name
# and address against the Node; needs the CSR rules from the add-ons (02-nodehosts-rbac.yaml).
approve = true
allowed_cidrs = $(toml_strings "$NODE_CIDR")
EOF
    local lb lines=()
    if (( LB_COUNT > 1 )); then lines+=("$LB_VIP lb"); fi
    for lb in $(lb_names); do lines+=("$(node_ip "$lb") $lb"); done
    update_file "$root/etc/nodehosts/static-hosts" 0644 < <(
        echo "# Names that are not Kubernetes nodes, published by nodehosts next to the nodes."
        printf '%s\n' "${lines[@]}"
    )
}

# render_coredns ROOT UPSTREAM...: coredns/Corefile and its unit, and the upstream resolvers.
render_coredns() {
    local root=$1 server; shift
    update_file "$root/etc/coredns/Corefile" 0644 <"$LAB_REPO_DIR/coredns/Corefile"
    update_file "$root/etc/systemd/system/coredns.service" 0644 <"$LAB_REPO_DIR/coredns/coredns.service"
    update_file "$root/etc/coredns/upstream.resolv.conf" 0644 < <(
        echo "# Upstream resolvers for CoreDNS's forward plugin (found by provisioning/scripts/lb.sh)."
        for server in "$@"; do echo "nameserver $server"; done
    )
}

# render_keepalived ROOT NAME IFACE: VRRP between the two LBs for LB_VIP.
render_keepalived() {
    local root=$1 name=$2 iface=$3 own peer priority
    own=$(node_ip "$name")
    if [[ $name == lb-0 ]]; then peer=$(node_ip lb-1); priority=150; else peer=$(node_ip lb-0); priority=100; fi
    local dns_check="systemctl is-active --quiet coredns"
    [[ $DNS_MODE == nodehosts ]] && dns_check="systemctl is-active --quiet nodehosts"
    update_file "$root/etc/keepalived/keepalived.conf" 0644 <<EOF
# $LB_VIP (the API endpoint and every node's nameserver) lives on the LB whose haproxy and
# DNS server are up. Each LB runs its own nodehosts: they share no state.
global_defs {
    enable_script_security
    script_user root
}

vrrp_script api_and_dns {
    script "/bin/sh -c 'systemctl is-active --quiet haproxy && $dns_check'"
    interval 2
    fall 2
    rise 2
}

vrrp_instance lab_vip {
    state BACKUP
    interface $iface
    virtual_router_id 40
    priority $priority
    advert_int 1
    # Unicast: VirtualBox host-only networks do not always pass multicast.
    unicast_src_ip $own
    unicast_peer {
        $peer
    }
    virtual_ipaddress {
        $LB_VIP/${NODE_CIDR#*/} dev $iface
    }
    track_script {
        api_and_dns
    }
}
EOF
}

# nameservers_in FILE...: the nameservers listed there that can serve as upstreams (not
# loopback, not the LB itself), first file with any wins.
nameservers_in() {
    local file servers
    for file in "$@"; do
        [[ -r $file ]] || continue
        servers=$(awk '$1 == "nameserver" { print $2 }' "$file" \
            | grep -Ev '^(127\.|0\.0\.0\.0$|::1$)' | grep -vxF "$LB_VIP" || true)
        if [[ -n $servers ]]; then echo "$servers" | tr '\n' ' ' | sed 's/ $//'; return 0; fi
    done
}

# upstream_resolvers: UPSTREAM_DNS ("none" for no forwarding), else what this LB saved on its
# first run, else what DHCP gave it, else VirtualBox NAT's resolver 10.0.2.3.
upstream_resolvers() {
    local saved=${1:-/etc/kubernetes-lab/upstream.resolv.conf} found
    case ${UPSTREAM_DNS:-} in
        none) return 0 ;;
        "") ;;
        *) echo "$UPSTREAM_DNS"; return 0 ;;
    esac
    found=$(nameservers_in "$saved" /run/systemd/resolve/resolv.conf /etc/resolv.conf)
    echo "${found:-10.0.2.3}"
}
