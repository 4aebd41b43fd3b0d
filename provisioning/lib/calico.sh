# shellcheck shell=bash
# Calico from upstream's own manifest for CALICO_VERSION (CRDs, RBAC, calico-node,
# calico-kube-controllers), checked against CALICO_MANIFEST_SHA256, then patched for the lab
# by calico_patch.py (host-local IPAM from the node podCIDRs, the node address inside
# NODE_CIDR, the pool POD_CIDR, the API through the LB). No copy of it lives in this repository.

: "${LAB_PYTHON:=python3}"     # with PyYAML (Debian: python3-yaml)

calico_manifest_url() { echo "https://raw.githubusercontent.com/projectcalico/calico/$CALICO_VERSION/manifests/calico.yaml"; }

# fetch_calico_manifest DEST: upstream's manifest, downloaded once, or taken from
# $LAB_BINARIES/calico.yaml for an offline lab; either way it must have the pinned SHA-256
# (raw.githubusercontent.com publishes no checksum: the pin is ours, in versions.env).
fetch_calico_manifest() {
    local dest=$1 url name
    url=$(calico_manifest_url)
    name=$(basename "$url")
    if [[ -f $dest ]] && echo "$CALICO_MANIFEST_SHA256  $dest" | sha256sum --quiet -c - 2>/dev/null; then
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    if [[ -n ${LAB_BINARIES:-} ]]; then
        [[ -f $LAB_BINARIES/$name ]] || die "LAB_BINARIES=$LAB_BINARIES has no $name (Calico $CALICO_VERSION: $url)"
        cp -f "$LAB_BINARIES/$name" "$dest.part"
    else
        log "downloading $url"
        curl -fsSL --retry 3 -o "$dest.part" "$url"
    fi
    if ! echo "$CALICO_MANIFEST_SHA256  $dest.part" | sha256sum --quiet -c - 2>/dev/null; then
        die "checksum mismatch for Calico's $name: expected $CALICO_MANIFEST_SHA256 (versions.env), got $(sha256sum <"$dest.part" | cut -d' ' -f1)"
    fi
    mv -f "$dest.part" "$dest"
}

# render_calico UPSTREAM_MANIFEST OUT: the patched manifest, written only when it changes.
# Fails, writing nothing, when the manifest is not shaped as calico_patch.py expects.
render_calico() {
    local src=$1 out=$2 patched
    patched=$("$LAB_PYTHON" "$LAB_LIB_DIR/calico_patch.py" --version "$CALICO_VERSION" \
        --node-cidr "$NODE_CIDR" --pod-cidr "$POD_CIDR" --api-host "$LB_VIP" --api-port 6443 <"$src") \
        || die "could not patch Calico's manifest $src (see above)"
    update_file "$out" 0644 <<<"$patched"
}
