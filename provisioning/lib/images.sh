# shellcheck shell=bash
# Images without a registry (air-gapped labs, and the lab test in tests/lab): OCI images built
# from local binaries under exactly the names and tags the lab pins (versions.env), as
# OCI-layout tars that each node's containerd imports before its kubelet starts.
#
#   on a machine with the binaries (scripts/upstream-bin's output) and gcc:
#     lab_images_build BIN_DIR OUT_DIR        one OUT_DIR/<name>.tar per image
#   on a node, after node.sh and before controller.sh / worker.sh (scripts/images.sh):
#     lab_images_import DIR                   every DIR/*.tar into containerd (k8s.io), pinned
#
# An image is one uncompressed layer (the binary, /etc/passwd and /tmp) and a config whose
# Entrypoint is the binary: the static pod manifests and add-ons give their own `command`.
# kube-proxy's layer also holds iptables (Debian's, with its libraries: lab_iptables_root),
# as upstream's image does: in iptables mode it runs iptables-restore and refuses to start
# without it ("iptables is not available on this host").

# The images the nodes need, "file-name reference binary...": the first binary is the
# entrypoint; each is taken from BIN_DIR (pause is built from provisioning/images/pause.c).
lab_image_list() {
    local k8s=registry.k8s.io
    cat <<EOF
pause $PAUSE_IMAGE pause
etcd $ETCD_IMAGE etcd etcdctl
kube-apiserver $k8s/kube-apiserver:$KUBERNETES_VERSION kube-apiserver
kube-controller-manager $k8s/kube-controller-manager:$KUBERNETES_VERSION kube-controller-manager
kube-scheduler $k8s/kube-scheduler:$KUBERNETES_VERSION kube-scheduler
kube-proxy $k8s/kube-proxy:$KUBERNETES_VERSION kube-proxy
coredns $CLUSTER_COREDNS_IMAGE coredns
EOF
}

# _sha256 FILE: the hex digest.
_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# _blob DIR FILE: move FILE into DIR/blobs/sha256/<digest>, print the digest.
_blob() {
    local dir=$1 file=$2 digest
    digest=$(_sha256 "$file")
    mkdir -p "$dir/blobs/sha256"
    mv -f "$file" "$dir/blobs/sha256/$digest"
    echo "$digest"
}

# oci_image_tar [--root DIR] REFERENCE OUT_TAR ENTRYPOINT [FILE...]
#   One layer: ENTRYPOINT at /<name> for pause and coredns (where the upstream images have
#   them), else at /usr/local/bin/<name> like each FILE; with --root, DIR's files under them.
#   Reproducible: same input, same digests.
oci_image_tar() {
    local base=""
    if [[ $1 == --root ]]; then base=$2; shift 2; fi
    local ref=$1 out=$2 entry=$3; shift 3
    local work layer_root layer config manifest digest size arch entry_path file
    arch=$(lab_arch)
    work=$(mktemp -d)
    layer_root=$work/rootfs
    mkdir -p "$layer_root"
    [[ -z $base ]] || cp -a "$base/." "$layer_root/"
    mkdir -p "$layer_root/usr/local/bin" "$layer_root/etc" "$layer_root/tmp"
    chmod 1777 "$layer_root/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
        >"$layer_root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$layer_root/etc/group"
    for file in "$entry" "$@"; do
        [[ -f $file ]] || die "no binary $file for $ref"
    done
    case $(basename "$entry") in
        pause|coredns) entry_path=/$(basename "$entry") ;;
        *) entry_path=/usr/local/bin/$(basename "$entry") ;;
    esac
    install -m 0755 "$entry" "$layer_root$entry_path"
    for file in "$@"; do
        install -m 0755 "$file" "$layer_root/usr/local/bin/$(basename "$file")"
    done
    mkdir -p "$work/layout"
    (cd "$layer_root" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -cf "$work/layer.tar" .)
    layer=$(_blob "$work/layout" "$work/layer.tar")
    size=$(stat -c %s "$work/layout/blobs/sha256/$layer")
    jq -cn --arg arch "$arch" --arg entry "$entry_path" --arg layer "sha256:$layer" '{
        architecture: $arch, os: "linux",
        config: {Entrypoint: [$entry], WorkingDir: "/",
                 Env: ["PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"]},
        rootfs: {type: "layers", diff_ids: [$layer]},
        history: [{created_by: "provisioning/lib/images.sh"}]}' >"$work/config.json"
    config=$(_blob "$work/layout" "$work/config.json")
    jq -cn --arg config "sha256:$config" --argjson csize "$(stat -c %s "$work/layout/blobs/sha256/$config")" \
        --arg layer "sha256:$layer" --argjson lsize "$size" '{
        schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $config, size: $csize},
        layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $layer, size: $lsize}]}' \
        >"$work/manifest.json"
    manifest=$(_blob "$work/layout" "$work/manifest.json")
    digest=sha256:$manifest
    jq -cn --arg ref "$ref" --arg digest "$digest" --arg arch "$arch" \
        --argjson size "$(stat -c %s "$work/layout/blobs/sha256/$manifest")" '{
        schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $digest,
                     size: $size, platform: {architecture: $arch, os: "linux"},
                     annotations: {"io.containerd.image.name": $ref,
                                   "org.opencontainers.image.ref.name": ($ref | sub(".*:"; ""))}}]}' \
        >"$work/layout/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
    mkdir -p "$(dirname "$out")"
    (cd "$work/layout" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -cf "$out.part" oci-layout index.json blobs)
    mv -f "$out.part" "$out"
    rm -rf "$work"
}

# The Debian packages of kube-proxy's iptables: iptables and what it needs to run (the C
# library included), as apt resolves them here; no Recommends (nftables).
lab_iptables_packages() {
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances iptables | grep '^[a-z0-9]' | sort -u
}

# lab_iptables_root DIR: iptables and its libraries in DIR, a merged-/usr root of their own
# (no other file), from the Debian packages apt downloads into LAB_DEB_CACHE (default
# ~/.cache/nodehosts/debs); the machine that builds the images needs apt, not iptables.
# iptables, ip6tables and their -save/-restore are the nf_tables variant, Debian's default
# since buster and what the nodes' own iptables uses (kube-proxy's rules and Calico's go
# through the same kernel API then).
lab_iptables_root() {
    local root=$1 cache=${LAB_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodehosts/debs}
    local packages deb d t
    command -v apt-get >/dev/null || die "kube-proxy's image needs iptables from Debian packages: no apt-get here"
    mapfile -t packages < <(lab_iptables_packages)
    (( ${#packages[@]} > 1 )) || die "apt-cache knows no package iptables (apt-get update?)"
    mkdir -p "$cache"
    (cd "$cache" && apt-get download -q "${packages[@]}" >/dev/null 2>&1) \
        || die "apt-get download ${packages[*]} failed (in $cache)"
    mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
    for d in bin sbin lib lib64; do ln -sfn "usr/$d" "$root/$d"; done
    for deb in "${packages[@]}"; do
        # The newest file of the package apt downloaded (older versions may linger in cache).
        deb=$(ls -t "$cache/${deb}"_*.deb | head -n 1)
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root"
    done
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" \
        "$root/usr/share/locale" "$root/usr/share/info"
    for t in iptables ip6tables; do
        for d in "" -save -restore; do ln -sfn xtables-nft-multi "$root/usr/sbin/$t$d"; done
    done
    ldconfig -r "$root"
    [[ -x $root/usr/sbin/xtables-nft-multi ]] || die "no xtables-nft-multi in the iptables package"
}

# lab_images_build BIN_DIR OUT_DIR: every image of lab_image_list, pause compiled here.
lab_images_build() {
    local bin=$1 out=$2 name ref binaries files b tmp root
    command -v jq >/dev/null || die "lab_images_build needs jq"
    mkdir -p "$out"
    command -v gcc >/dev/null || die "lab_images_build needs gcc (and the static C library) for pause"
    gcc -static -Os -Wall -o "$out/.pause" "$LAB_DIR/images/pause.c" || die "building pause failed"
    while read -r name ref binaries; do
        files=()
        for b in $binaries; do
            if [[ $b == pause ]]; then files+=("$out/.pause"); else files+=("$bin/$b"); fi
        done
        # The cluster's CoreDNS (CLUSTER_COREDNS_IMAGE) is another version than the LB's.
        [[ $name == coredns ]] && files=("$bin/coredns-cluster")
        _lab_image_version_matches "$name" "$ref" "${files[0]}"
        log "image $ref <- ${files[*]}"
        # The entrypoint keeps its upstream name inside the image, whatever the file is called.
        tmp=$(mktemp -d)
        cp "${files[0]}" "$tmp/$name"
        root=()
        if [[ $name == kube-proxy ]]; then
            lab_iptables_root "$tmp/root"
            root=(--root "$tmp/root")
        fi
        oci_image_tar "${root[@]}" "$ref" "$out/$name.tar" "$tmp/$name" "${files[@]:1}"
        rm -rf "$tmp"
    done < <(lab_image_list)
    rm -f "$out/.pause"
}

# A tag is a promise about the version inside: refuse a binary that reports another one.
_lab_image_version_matches() {
    local name=$1 ref=$2 file=$3 want have
    want=${ref##*:}
    want=${want%-0}                      # etcd:3.6.8-0 -> 3.6.8
    want=${want#v}
    case $name in
        pause) return 0 ;;
        etcd) have=$("$file" --version 2>/dev/null | awk '/etcd Version/ { print $3 }') ;;
        coredns) have=$("$file" -version 2>/dev/null | awk -F- '/CoreDNS/ { print $2; exit }') ;;
        *) have=$("$file" --version 2>/dev/null | awk '{ print $2 }'); have=${have#v} ;;
    esac
    [[ $have == "$want" ]] || die "$file reports version '$have', the image $ref needs $want"
}

# lab_images_import DIR: import every DIR/*.tar into containerd's k8s.io namespace (where the
# kubelet looks), labelled pinned so the kubelet's image GC keeps them; then check each name.
lab_images_import() {
    local dir=$1 tar ref digest index
    compgen -G "$dir/*.tar" >/dev/null || die "no image tars in $dir"
    for tar in "$dir"/*.tar; do
        # Nodes have no jq: the index has one manifest, written by oci_image_tar (compact JSON).
        index=$(tar -xOf "$tar" index.json)
        ref=$(sed -n 's/.*"io.containerd.image.name":"\([^"]*\)".*/\1/p' <<<"$index")
        digest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' <<<"$index")
        [[ -n $ref && -n $digest ]] || die "$tar: no image name or digest in its index.json"
        if [[ $(ctr -n k8s.io images ls "name==$ref" | awk 'NR == 2 { print $3 }') == "$digest" ]]; then
            continue
        fi
        log "importing $ref"
        ctr -n k8s.io images import --label io.cri-containerd.pinned=pinned "$tar" >/dev/null
        [[ $(ctr -n k8s.io images ls "name==$ref" | awk 'NR == 2 { print $3 }') == "$digest" ]] \
            || die "containerd did not import $ref ($digest) from $tar"
    done
}
