#!/usr/bin/env bash
# On your machine, before `vagrant up`: the PKI, the kubeconfigs and one secrets bundle per
# machine in provisioning/generated/, and the nodehosts Debian package for the LBs.
#
#   ./host.sh                           PKI + bundles, and the .deb if there is none yet
#   NODEHOSTS_DEB=path/to.deb ./host.sh use that package instead of building one
#   NODEHOSTS_REBUILD=1 ./host.sh       build the package again
#   LAB_GENERATED=DIR ./host.sh         write DIR instead of provisioning/generated (the
#                                       Vagrantfile reads the same variable; tests/lab uses it)
#
# Building the package needs a Debian/Ubuntu host with dpkg-buildpackage and the
# Build-Depends of debian/control (scripts/build-deb, `make deb`, does it); elsewhere, build
# it in a Debian container or VM and pass NODEHOSTS_DEB. Safe to re-run: existing keys and
# certificates are kept.
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/lib/all.sh"
lab_load_env
export LAB_NODE=host
out=${LAB_GENERATED:-$LAB_DIR/generated}

log "PKI, kubeconfigs and per-machine bundles in $out"
secrets_generate_all "$out"

deb=$out/nodehosts.deb
if [[ -n ${NODEHOSTS_DEB:-} ]]; then
    cp -f "$NODEHOSTS_DEB" "$deb"
elif [[ ! -f $deb || -n ${NODEHOSTS_REBUILD:-} ]]; then
    command -v dpkg-buildpackage >/dev/null \
        || die "no dpkg-buildpackage here: build the package elsewhere and run NODEHOSTS_DEB=path/to/nodehosts_*_all.deb $0"
    # The repository's own build (make deb): a copy of the tree, an emptied environment
    # (Debian's python3, not a pyenv/venv one first on PATH), the log in deb-build/.
    log "building the nodehosts package (scripts/build-deb: dpkg-buildpackage -us -uc -b, out of tree)"
    built=$("$LAB_REPO_DIR/scripts/build-deb" "$out/deb-build") \
        || die "the package build failed; see $out/deb-build/build.log"
    cp -f "$built" "$deb"
fi
log "nodehosts package: $(dpkg-deb -f "$deb" Package Version 2>/dev/null | tr '\n' ' ' || basename "$deb")"
log "ready: vagrant up"
