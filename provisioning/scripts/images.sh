#!/usr/bin/env bash
# Images without a registry: the air-gapped path (and the lab test's, tests/lab).
#   on a machine with the binaries:   LAB_BINARIES=DIR bash images.sh build OUT_DIR
#       one OCI-layout tar per image the nodes run (control plane, etcd, kube-proxy, CoreDNS,
#       pause), named and tagged as versions.env pins them; DIR is scripts/upstream-bin's
#       output plus coredns-cluster (the CoreDNS of CLUSTER_COREDNS_IMAGE).
#   on a node, after node.sh and before controller.sh or worker.sh:
#       LAB_IMAGES=DIR bash images.sh
#       containerd configured as the role script will (no restart then) and started; every
#       DIR/*.tar imported into its k8s.io namespace, pinned, so the kubelet never pulls.
# Safe to re-run: an image already there with the same digest is not imported again.
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
: "${LAB_NODE:=$(hostname)}"

if [[ ${1:-} == build ]]; then
    out=${2:?usage: LAB_BINARIES=DIR images.sh build OUT_DIR}
    [[ -n ${LAB_BINARIES:-} ]] || die "set LAB_BINARIES to the directory of the binaries"
    lab_images_build "$LAB_BINARIES" "$out"
    log "images in $out: copy them to each node and run LAB_IMAGES=DIR images.sh there"
    exit 0
fi
(( $# == 0 )) || die "usage: LAB_IMAGES=DIR images.sh | LAB_BINARIES=DIR images.sh build OUT_DIR"
[[ $(id -u) == 0 ]] || die "run as root"
: "${LAB_IMAGES:?set LAB_IMAGES to the directory of the image tars}"
cd /
log "1/2 containerd"
render_containerd /
service_up containerd /etc/containerd/config.toml /etc/systemd/system/containerd.service
for (( i = 0; i < 30; i++ )); do ctr version >/dev/null 2>&1 && break; sleep 1; done
log "2/2 images from $LAB_IMAGES"
lab_images_import "$LAB_IMAGES"
log "images imported: ctr -n k8s.io images ls"
