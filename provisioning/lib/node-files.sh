# shellcheck shell=bash
# Files of every Kubernetes node: kernel settings, resolver, containerd, crictl and kubelet.
# Each render_* function writes under ROOT ("/" on a machine, a directory in render.sh).

# Kernel modules and sysctls. Forwarding is what lets pods on different nodes talk: without
# net.ipv4.conf.all.forwarding=1 a node drops packets routed between its pods and the network.
render_kernel_settings() {
    local root=$1
    update_file "$root/etc/modules-load.d/kubernetes-lab.conf" 0644 <<'EOF'
# containerd's snapshotter, and iptables seeing bridged traffic (kube-proxy, Calico).
overlay
br_netfilter
EOF
    update_file "$root/etc/sysctl.d/90-kubernetes-lab.conf" 0644 <<'EOF'
# Route packets between pods, nodes and services (cross-node pod traffic fails without it).
net.ipv4.ip_forward = 1
net.ipv4.conf.all.forwarding = 1
# Let iptables see bridged traffic (needs br_netfilter loaded).
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
EOF
}

# check_forwarding [PROC_SYS]: the setting in effect, not the one in the file.
check_forwarding() {
    local proc=${1:-/proc/sys} value
    value=$(cat "$proc/net/ipv4/conf/all/forwarding" 2>/dev/null || echo missing)
    if [[ $value != 1 ]]; then
        printf '%s\n' \
            "ERROR: net.ipv4.conf.all.forwarding is '$value', not 1." \
            "  Pods on different nodes will not reach each other: this node drops the packets" \
            "  it should route to and from its pods. It is set in" \
            "  /etc/sysctl.d/90-kubernetes-lab.conf; something overrides it (look with" \
            "  'sysctl --system' and 'grep -r forwarding /etc/sysctl.d /usr/lib/sysctl.d')." >&2
        return 1
    fi
}

# The node's resolver: the load balancer, for node names and everything else.
render_resolver() {
    local root=$1 nameserver=$2
    update_file "$root/etc/resolv.conf" 0644 <<EOF
# Every node resolves through the load balancer (nodehosts/CoreDNS): node names from the
# Kubernetes API, other names forwarded upstream. Written by provisioning/scripts/node.sh.
nameserver $nameserver
search $NODE_DOMAIN
EOF
    # dhclient must not put the NAT network's resolver back on each lease renewal.
    update_file "$root/etc/dhcp/dhclient-enter-hooks.d/zz-lab-keep-resolv-conf" 0644 <<'EOF'
# Keep /etc/resolv.conf as provisioning wrote it (the lab's nameserver is the LB).
make_resolv_conf() { :; }
EOF
}

# comment_out_swap FSTAB: swap stays off after a reboot (the kubelet refuses to run with swap).
comment_out_swap() {
    local fstab=${1:-/etc/fstab}
    [[ -f $fstab ]] || return 0
    if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' "$fstab"; then
        sed -Ei 's/^([^#].*[[:space:]]swap[[:space:]].*)$/# disabled for the kubelet: \1/' "$fstab"
    fi
}

render_containerd() {
    local root=$1
    update_file "$root/etc/containerd/config.toml" 0644 <<EOF
# containerd 2.x (config version 3) for the kubelet.
version = 3

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '$PAUSE_IMAGE'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  # The kubelet uses the systemd cgroup driver: both must agree.
  SystemdCgroup = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['/opt/cni/bin']
  conf_dir = '/etc/cni/net.d'

[plugins.'io.containerd.grpc.v1.cri']
  # exec/attach/port-forward streams go through the kubelet, which proxies them from here:
  # keep the stream server on loopback, never on the NAT address 10.0.2.15.
  stream_server_address = '127.0.0.1'
EOF
    update_file "$root/etc/systemd/system/containerd.service" 0644 <<'EOF'
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
EOF
    update_file "$root/etc/crictl.yaml" 0644 <<'EOF'
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: 10
EOF
}

# render_kubelet ROOT NAME NODE_IP
#   controllers: client certificate from the PKI, static pods, registered with a NoSchedule
#   taint; workers: TLS bootstrapping with the bootstrap token. Both request their serving
#   certificate by CSR (serverTLSBootstrap), which nodehosts approves.
render_kubelet() {
    local root=$1 name=$2 node_ip=$3 role extra_args extra_config=""
    case $name in
        controller-*)
            role=controller
            extra_args=""
            extra_config="staticPodPath: /etc/kubernetes/manifests
registerWithTaints:
- key: node-role.kubernetes.io/control-plane
  effect: NoSchedule"
            ;;
        worker-*)
            role=worker
            extra_args=" \\
  --bootstrap-kubeconfig=/var/lib/kubelet/bootstrap-kubeconfig"
            ;;
        *) die "render_kubelet: $name is not a Kubernetes node" ;;
    esac
    update_file "$root/var/lib/kubelet/config.yaml" 0644 <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
clusterDomain: $CLUSTER_DOMAIN
clusterDNS:
- $CLUSTER_DNS_IP
resolvConf: /etc/resolv.conf
failSwapOn: true
rotateCertificates: true
serverTLSBootstrap: true
${extra_config}
EOF
    # The node IP changes with a worker's DHCP lease: it lives in its own file, which the
    # dhclient hook below rewrites.
    update_file "$root/etc/default/kubelet" 0644 <<EOF
KUBELET_NODE_IP=$node_ip
EOF
    update_file "$root/etc/systemd/system/kubelet.service" 0644 <<EOF
[Unit]
Description=Kubernetes kubelet ($role)
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
After=containerd.service
Requires=containerd.service

[Service]
EnvironmentFile=/etc/default/kubelet
# --node-ip: the private network's address; every VM has the same NAT address 10.0.2.15.
# node.kubernetes.io/role is a label the kubelet may set itself (node-role.kubernetes.io/*
# is refused by NodeRestriction; provisioning/scripts/label-nodes.sh adds it with kubectl).
ExecStart=/usr/local/bin/kubelet \\
  --config=/var/lib/kubelet/config.yaml \\
  --kubeconfig=/var/lib/kubelet/kubeconfig \\
  --cert-dir=/var/lib/kubelet/pki \\
  --node-ip=\${KUBELET_NODE_IP} \\
  --node-labels=node.kubernetes.io/role=$role${extra_args}
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
    if [[ $role == worker ]]; then
        update_file "$root/etc/dhcp/dhclient-exit-hooks.d/kubelet-node-ip" 0644 <<EOF
# Sourced by dhclient-script. When the private network's lease brings a new address, the
# kubelet must report it: rewrite --node-ip and restart the kubelet. nodehosts then publishes
# the new address within seconds.
case "\$reason" in BOUND|RENEW|REBIND|REBOOT)
    case "\$new_ip_address" in $NODE_NET_PREFIX.*)
        if ! grep -qx "KUBELET_NODE_IP=\$new_ip_address" /etc/default/kubelet 2>/dev/null; then
            echo "KUBELET_NODE_IP=\$new_ip_address" >/etc/default/kubelet
            systemctl --no-block try-restart kubelet.service
        fi ;;
    esac ;;
esac
EOF
        # The same for dhcpcd (Debian 13 may use it instead of dhclient): dhcpcd-run-hooks
        # sources this file with the same reason and new_ip_address variables.
        update_file "$root/etc/dhcpcd.exit-hook" 0644 \
            <"$root/etc/dhcp/dhclient-exit-hooks.d/kubelet-node-ip"
    fi
}
