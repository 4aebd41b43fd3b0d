#!/bin/bash
# Build the nodehosts .deb from this source tree (scripts/build-deb) and lint it.
#   tests/e2e/build-deb.sh [OUTDIR]      (default OUTDIR: /tmp/nodehosts-deb)
# Prints the path of the .deb on stdout.
# Exit status: non-zero if the build fails or lintian reports an error or warning.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-/tmp/nodehosts-deb}

deb=$("$top/scripts/build-deb" "$out")
out=$(dirname "$deb")
changes=$(ls "$out"/nodehosts_*_*.changes)
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
