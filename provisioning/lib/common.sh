# shellcheck shell=bash
# Helpers every other file uses: messages, loading versions.env and cluster.env, the names and
# addresses of the machines, writing files only when their content changes, and downloads
# that are checked against the checksum the project publishes.
#
# This is a library: it defines functions and sets no shell options. The scripts that source
# it start with `set -euo pipefail`.

LAB_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_DIR=$(dirname "$LAB_LIB_DIR")          # provisioning/
# shellcheck disable=SC2034  # used by lb-files.sh and host.sh
LAB_REPO_DIR=$(dirname "$LAB_DIR")         # the repository (coredns/ lives there)
LAB_CHANGED=()                              # files update_file changed in this run
# Where node.sh keeps a copy of provisioning/ on each machine: the upload in /tmp/lab is
# gone after a reboot, and timers and the troubleshooting scripts run from here.
# shellcheck disable=SC2034  # used by node.sh, addons.sh and smoke.sh
LAB_INSTALL_DIR=/opt/lab/provisioning

log() { printf '[%s] %s\n' "${LAB_NODE:-lab}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${LAB_NODE:-lab}" "$*" >&2; exit 1; }

# Source versions.env and cluster.env: every value not already set in the environment.
lab_load_env() {
    # shellcheck source=../versions.env
    source "$LAB_DIR/versions.env"
    # shellcheck source=../cluster.env
    source "$LAB_DIR/cluster.env"
    case $DNS_MODE in coredns|nodehosts) ;; *) die "DNS_MODE must be coredns or nodehosts, not '$DNS_MODE'" ;; esac
    (( LB_COUNT >= 1 && LB_COUNT <= 2 )) || die "LB_COUNT must be 1 or 2"
    (( CONTROLLER_COUNT >= 1 )) || die "CONTROLLER_COUNT must be at least 1"
}

# --- names and addresses -----------------------------------------------------------------

lb_names()         { local i; for (( i = 0; i < LB_COUNT; i++ )); do echo "lb-$i"; done; }
controller_names() { local i; for (( i = 0; i < CONTROLLER_COUNT; i++ )); do echo "controller-$i"; done; }
worker_names()     { local i; for (( i = 0; i < WORKER_COUNT; i++ )); do echo "worker-$i"; done; }

# The static address of lb-N or controller-N. Workers have none: they use DHCP.
node_ip() {
    local name=$1 index=${1##*-}
    case $name in
        lb-*) if (( LB_COUNT == 1 )); then echo "$LB_VIP"; else echo "$NODE_NET_PREFIX.$(( LB_IP_START + index ))"; fi ;;
        controller-*) echo "$NODE_NET_PREFIX.$(( CONTROLLER_IP_START + index ))" ;;
        *) die "node_ip: $name has no static address" ;;
    esac
}

# "a,b,c" from the lines of a command's output.
join_by() { local IFS=$1; shift; echo "$*"; }

# The etcd members: controller-0=https://10.240.0.10:2380,...
etcd_initial_cluster() {
    local name members=()
    for name in $(controller_names); do members+=("$name=https://$(node_ip "$name"):2380"); done
    join_by , "${members[@]}"
}

etcd_servers() {
    local name servers=()
    for name in $(controller_names); do servers+=("https://$(node_ip "$name"):2379"); done
    join_by , "${servers[@]}"
}

# The IPv4 address this machine has inside NODE_CIDR (the private network), never the NAT one.
# PRIVATE_IP_OVERRIDE lets a test or an unusual setup give it.
private_ip() {
    if [[ -n ${PRIVATE_IP_OVERRIDE:-} ]]; then echo "$PRIVATE_IP_OVERRIDE"; return; fi
    local ip
    ip=$(ip -o -4 addr show to "$NODE_CIDR" | awk '{ sub("/.*", "", $4); print $4; exit }')
    [[ -n $ip ]] || die "no address in $NODE_CIDR on this machine (ip -4 addr): is the private network up?"
    echo "$ip"
}

# The interface that carries that address (eth1 on the Debian box).
private_interface() {
    if [[ -n ${PRIVATE_IFACE_OVERRIDE:-} ]]; then echo "$PRIVATE_IFACE_OVERRIDE"; return; fi
    local iface
    iface=$(ip -o -4 addr show to "$NODE_CIDR" | awk '{ print $2; exit }')
    [[ -n $iface ]] || die "no interface with an address in $NODE_CIDR"
    echo "$iface"
}

# --- files ---------------------------------------------------------------------------------

# update_file PATH MODE [OWNER:GROUP] < content
# Writes PATH atomically only if the content or mode differs, and records it in LAB_CHANGED,
# so a script re-run changes nothing and restarts nothing. The owner is set only when running
# as root and the group exists (render.sh runs as anyone).
update_file() {
    local path=$1 mode=$2 owner=${3:-} tmp
    mkdir -p "$(dirname "$path")"
    tmp=$(mktemp "$(dirname "$path")/.tmp.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -n $owner && $(id -u) == 0 ]] && getent group "${owner#*:}" >/dev/null; then
        chown "$owner" "$tmp"
    fi
    if [[ -f $path ]] && cmp -s "$tmp" "$path" \
        && [[ $(stat -c %a "$path") == "$(stat -c %a "$tmp")" ]]; then
        rm -f "$tmp"
        return 0
    fi
    mv -f "$tmp" "$path"
    # Normalised: render_* functions write "$root/etc/x", which is "//etc/x" for ROOT=/.
    while [[ $path == *//* ]]; do path=${path//\/\//\/}; done
    LAB_CHANGED+=("$path")
}

# was_changed PATH... : true if update_file changed any of them in this run.
was_changed() {
    local want have
    for want in "$@"; do
        while [[ $want == *//* ]]; do want=${want//\/\//\/}; done
        for have in "${LAB_CHANGED[@]}"; do [[ $have == "$want" ]] && return 0; done
    done
    return 1
}

# --- downloads -----------------------------------------------------------------------------

# The SHA-256 for NAME in a checksum file: either a bare digest, or "digest  name" lines.
checksum_for() {
    local sumfile=$1 name=$2 sum
    sum=$(awk -v name="$name" '
        NF == 1 && length($1) == 64 && $1 ~ /^[0-9a-f]+$/ { only = $1 }   # mawk: no {64}
        NF >= 2 { file = $2; sub(/^\*/, "", file); n = split(file, parts, "/");
                  if (parts[n] == name) { print $1; found = 1; exit } }
        END { if (!found && only != "") print only }' "$sumfile")
    [[ $sum =~ ^[0-9a-f]{64}$ ]] || die "no SHA-256 for $name in $(basename "$sumfile")"
    echo "$sum"
}

# fetch URL CHECKSUM_URL DEST: download once, verify against the published checksum.
fetch() {
    local url=$1 sum_url=$2 dest=$3 name sum
    name=$(basename "$url")
    if [[ -f $dest && -f $dest.sha256 ]] && sha256sum --quiet -c "$dest.sha256" 2>/dev/null; then
        return 0
    fi
    log "downloading $url"
    mkdir -p "$(dirname "$dest")"
    curl -fsSL --retry 3 -o "$dest.part" "$url"
    curl -fsSL --retry 3 -o "$dest.sums" "$sum_url"
    sum=$(checksum_for "$dest.sums" "$name")
    echo "$sum  $dest.part" | sha256sum --quiet -c - || die "checksum mismatch for $url"
    mv -f "$dest.part" "$dest"
    echo "$sum  $dest" >"$dest.sha256"
    rm -f "$dest.sums"
}

# The Debian/Kubernetes name of this machine's architecture.
lab_arch() { dpkg --print-architecture 2>/dev/null || echo amd64; }
