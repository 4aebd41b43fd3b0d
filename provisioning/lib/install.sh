# shellcheck shell=bash
# Installing the pinned binaries on a machine (versions.env). Every download is checked
# against the checksum its project publishes next to it, and kept in LAB_CACHE so a re-run
# downloads nothing.
#
# LAB_BINARIES=DIR (offline and air-gapped installs, the lab test): take each binary from
# $LAB_BINARIES/<name> (the layout of scripts/upstream-bin's output: cni/<plugin>) instead of
# downloading it.

: "${LAB_CACHE:=/var/cache/kubernetes-lab}"

# local_binary NAME DEST: install $LAB_BINARIES/NAME as DEST (mode 0755).
local_binary() {
    [[ -f $LAB_BINARIES/$1 ]] || die "LAB_BINARIES=$LAB_BINARIES has no $1"
    install -m 0755 "$LAB_BINARIES/$1" "$2"
}

kube_binary_url() { echo "https://dl.k8s.io/release/$KUBERNETES_VERSION/bin/linux/$(lab_arch)/$1"; }
containerd_url()  { echo "https://github.com/containerd/containerd/releases/download/v$CONTAINERD_VERSION/containerd-$CONTAINERD_VERSION-linux-$(lab_arch).tar.gz"; }
runc_url()        { echo "https://github.com/opencontainers/runc/releases/download/v$RUNC_VERSION/runc.$(lab_arch)"; }
cni_plugins_url() { echo "https://github.com/containernetworking/plugins/releases/download/v$CNI_PLUGINS_VERSION/cni-plugins-linux-$(lab_arch)-v$CNI_PLUGINS_VERSION.tgz"; }
crictl_url()      { echo "https://github.com/kubernetes-sigs/cri-tools/releases/download/$CRICTL_VERSION/crictl-$CRICTL_VERSION-linux-$(lab_arch).tar.gz"; }
coredns_url()     { echo "https://github.com/coredns/coredns/releases/download/v$COREDNS_VERSION/coredns_${COREDNS_VERSION}_linux_$(lab_arch).tgz"; }
calico_crds_url() { echo "https://raw.githubusercontent.com/projectcalico/calico/$CALICO_VERSION/manifests/crds.yaml"; }

# install_kube_binary NAME: kubelet, kubectl, ... into /usr/local/bin.
install_kube_binary() {
    local name=$1 url
    if [[ -n ${LAB_BINARIES:-} ]]; then local_binary "$name" "/usr/local/bin/$name"; return; fi
    url=$(kube_binary_url "$name")
    fetch "$url" "$url.sha256" "$LAB_CACHE/$KUBERNETES_VERSION/$name"
    install -m 0755 "$LAB_CACHE/$KUBERNETES_VERSION/$name" "/usr/local/bin/$name"
}

install_container_runtime() {
    local url name
    if [[ -n ${LAB_BINARIES:-} ]]; then
        for name in containerd ctr containerd-shim-runc-v2 crictl; do
            local_binary "$name" "/usr/local/bin/$name"
        done
        local_binary runc /usr/local/sbin/runc
        mkdir -p /opt/cni/bin /etc/cni/net.d
        for name in bridge host-local loopback portmap; do
            local_binary "cni/$name" "/opt/cni/bin/$name"
        done
        return
    fi
    url=$(containerd_url)
    fetch "$url" "$url.sha256sum" "$LAB_CACHE/$(basename "$url")"
    tar -xzf "$LAB_CACHE/$(basename "$url")" -C /usr/local      # bin/containerd, bin/ctr, ...

    url=$(runc_url)
    fetch "$url" "$(dirname "$url")/runc.sha256sum" "$LAB_CACHE/runc-$RUNC_VERSION"
    install -m 0755 "$LAB_CACHE/runc-$RUNC_VERSION" /usr/local/sbin/runc

    url=$(cni_plugins_url)
    fetch "$url" "$url.sha256" "$LAB_CACHE/$(basename "$url")"
    mkdir -p /opt/cni/bin /etc/cni/net.d
    tar -xzf "$LAB_CACHE/$(basename "$url")" -C /opt/cni/bin

    url=$(crictl_url)
    fetch "$url" "$url.sha256" "$LAB_CACHE/$(basename "$url")"
    tar -xzf "$LAB_CACHE/$(basename "$url")" -C /usr/local/bin crictl
}

install_coredns() {
    local url
    if [[ -n ${LAB_BINARIES:-} ]]; then local_binary coredns /usr/local/bin/coredns; return; fi
    url=$(coredns_url)
    fetch "$url" "$url.sha256" "$LAB_CACHE/$(basename "$url")"
    tar -xzf "$LAB_CACHE/$(basename "$url")" -C /usr/local/bin coredns
}

# apt_install PACKAGE...: only what is missing, without recommends.
apt_install() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    (( ${#missing[@]} )) || return 0
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # A fresh VM may still run apt-daily: wait for the lock instead of failing.
    apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null
}

# service_up UNIT FILE...: enable and start UNIT; restart it if one of FILEs changed now.
# With LAB_NO_BLOCK=1, do not wait for the unit to report it is ready.
service_up() {
    local unit=$1 block=(); shift
    [[ -n ${LAB_NO_BLOCK:-} ]] && block=(--no-block)
    systemctl daemon-reload
    systemctl enable --quiet "$unit"
    if (( $# )) && was_changed "$@"; then
        log "restarting $unit (configuration changed)"
        systemctl restart "${block[@]}" "$unit"
    else
        systemctl start "${block[@]}" "$unit"
    fi
}
