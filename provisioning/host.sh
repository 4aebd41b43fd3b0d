#!/usr/bin/env bash
# On your machine, before `vagrant up`: the PKI, the kubeconfigs and one secrets bundle per
# machine in provisioning/generated/, and the nodehosts Debian package for the LBs.
#
#   ./host.sh                           PKI + bundles, and the .deb if there is none yet
#   NODEHOSTS_DEB=path/to.deb ./host.sh use that package instead of building one
#   NODEHOSTS_REBUILD=1 ./host.sh       build the package again
#
# Building the package needs a Debian/Ubuntu host with dpkg-buildpackage and the
# Build-Depends of debian/control; elsewhere, build it in a Debian container or VM and pass
# NODEHOSTS_DEB. Safe to re-run: existing keys and certificates are kept.
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/lib/all.sh"
lab_load_env
export LAB_NODE=host
out=$LAB_DIR/generated

log "PKI, kubeconfigs and per-machine bundles in $out"
secrets_generate_all "$out"

deb=$out/nodehosts.deb
if [[ -n ${NODEHOSTS_DEB:-} ]]; then
    cp -f "$NODEHOSTS_DEB" "$deb"
elif [[ ! -f $deb || -n ${NODEHOSTS_REBUILD:-} ]]; then
    command -v dpkg-buildpackage >/dev/null \
        || die "no dpkg-buildpackage here: build the package elsewhere and run NODEHOSTS_DEB=path/to/nodehosts_*_all.deb $0"
    log "building the nodehosts package (dpkg-buildpackage -us -uc -b, out of tree)"
    build=$out/deb-build
    rm -rf "$build" && mkdir -p "$build/src"
    # The repository's files (tracked, and new ones not ignored), without build droppings.
    if git -C "$LAB_REPO_DIR" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$LAB_REPO_DIR" && git ls-files -z --cached --others --exclude-standard \
            | tar --null --ignore-failed-read -T - -cf -) | tar -C "$build/src" -xf -
    else
        tar -C "$LAB_REPO_DIR" --exclude=.git --exclude='.venv*' --exclude=provisioning/generated \
            -cf - . | tar -C "$build/src" -xf -
    fi
    # The system python3 and its Debian modules, not a pyenv/venv python first on PATH.
    (cd "$build/src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b \
        >"$build/build.log" 2>&1) \
        || die "the package build failed; see $build/build.log"
    cp -f "$build"/nodehosts_*_all.deb "$deb"
fi
log "nodehosts package: $(dpkg-deb -f "$deb" Package Version 2>/dev/null | tr '\n' ' ' || basename "$deb")"
log "ready: vagrant up"
