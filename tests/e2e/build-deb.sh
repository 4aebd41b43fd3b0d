#!/bin/bash
# Build the nodehosts .deb from this source tree, out of tree, and lint it.
#   tests/e2e/build-deb.sh [OUTDIR]      (default OUTDIR: /tmp/nodehosts-deb)
# Copies the tracked and untracked-but-not-ignored files to OUTDIR/src (so the
# working tree gets no build droppings), runs `dpkg-buildpackage -us -uc -b`
# there, then lintian on the result. Prints the path of the .deb on stdout.
# Exit status: non-zero if the build fails or lintian reports an error or warning.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-/tmp/nodehosts-deb}
out=$(mkdir -p "$out" && cd "$out" && pwd)

rm -rf "$out/src" "$out"/nodehosts_*
mkdir -p "$out/src"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$top" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 -r sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf -) | tar -C "$out/src" -xf -
else
    tar -C "$top" --exclude=.git --exclude='.venv*' --exclude=__pycache__ -cf - . | tar -C "$out/src" -xf -
fi

start=$SECONDS
echo "build-deb: dpkg-buildpackage in $out/src" >&2
# The system python3 and its Debian modules, not a pyenv/venv python first on PATH.
(cd "$out/src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1 || {
    tail -n 60 "$out/build.log" >&2
    echo "build-deb: FAILED (full log: $out/build.log)" >&2
    exit 1
}
echo "build-deb: built in $((SECONDS - start))s" >&2

changes=$(ls "$out"/nodehosts_*_*.changes)
deb=$(ls "$out"/nodehosts_*_all.deb)
# lintian: errors and warnings fail the build; info/pedantic are shown, not fatal.
PATH=/usr/sbin:/usr/bin:/sbin:/bin lintian --fail-on error,warning --display-info --tag-display-limit 0 "$changes" \
    >"$out/lintian.log" 2>&1 || {
    cat "$out/lintian.log" >&2
    echo "build-deb: lintian FAILED" >&2
    exit 1
}
# (lintian's own "running with root privileges" notice is not about the package)
grep -v 'running with root privileges' "$out/lintian.log" | sed 's/^/build-deb: lintian: /' >&2 || true
echo "build-deb: lintian clean (no errors, no warnings)" >&2
echo "$deb"
