#!/bin/bash
# Build (once) and cache a minimal bootable Debian root for the end-to-end test.
#   tests/e2e/mkroot.sh SUITE [lab]   -> prints the root's path
# The variant "lab" (tests/lab: Kubernetes nodes and the LB, offline) is a separate root,
# SUITE-lab, with every Debian package the provisioning scripts and nodehosts need already
# installed, and the kernel settings a container cannot change masked (see below).
# The root lives outside the repository, under $NODEHOSTS_E2E_CACHE
# (default /var/cache/nodehosts-e2e), and is built atomically: a half-built
# root from an interrupted run is never used.  Delete the directory to rebuild.
set -euo pipefail

suite=${1:?usage: mkroot.sh SUITE [lab]}
variant=${2:-}
cache=${NODEHOSTS_E2E_CACHE:-/var/cache/nodehosts-e2e}
mirror=${NODEHOSTS_E2E_MIRROR:-http://deb.debian.org/debian}
root=$cache/roots/$suite
# Bump when the package list or the setup below changes: old roots are rebuilt.
recipe=5
include=systemd,systemd-sysv,dbus,apt,bind9-dnsutils,iproute2,man-db
extra=()
case $variant in
    "") ;;
    lab)
        root=$cache/roots/$suite-lab
        recipe=5-lab2
        # Installed with apt after debootstrap (which does not resolve virtual packages).
        # node.sh: ca-certificates curl conntrack iptables ipset socat ethtool, sysctl, modprobe;
        # lb.sh: haproxy; workers: dhclient (its hooks follow a new lease); nodehosts' Depends.
        extra=(procps kmod ca-certificates curl conntrack iptables ipset socat ethtool
               haproxy isc-dhcp-client python3 python3-cryptography python3-dnslib
               python3-kubernetes python3-prometheus-client python3-structlog python3-uvloop
               python3-watchdog)
        ;;
    *) echo "mkroot.sh: unknown variant '$variant' (known: lab)" >&2; exit 2 ;;
esac

ready() { [[ -f $root/.nodehosts-e2e-recipe && $(cat "$root/.nodehosts-e2e-recipe") == "$recipe" ]]; }
if ready; then
    echo "$root"
    exit 0
fi

name=$(basename "$root")
mkdir -p "$cache/roots" "$cache/apt-archives/$suite"
# Concurrent test runs: one builds, the others wait for it and use its root.
exec 9>"$cache/roots/.$name.lock"
flock 9
if ready; then
    echo "$root"
    exit 0
fi
tmp=$cache/roots/.$name.tmp
rm -rf "$tmp"
echo "mkroot: debootstrap $suite into $tmp" >&2
start=$SECONDS
# --cache-dir keeps the downloaded .debs, so a rebuild of the root is offline-fast.
debootstrap --variant=minbase --include="$include" \
    --cache-dir="$cache/apt-archives/$suite" \
    "$suite" "$tmp" "$mirror" >"$cache/roots/.$name.log" 2>&1 || {
    tail -n 30 "$cache/roots/.$name.log" >&2
    exit 1
}

# Minimal system setup so it boots quietly inside systemd-nspawn.
echo "e2e-$suite" >"$tmp/etc/hostname"
printf 'deb %s %s main\n' "$mirror" "$suite" >"$tmp/etc/apt/sources.list"
: >"$tmp/etc/machine-id"            # systemd generates one at boot
# No recommends, no docs: keeps 'apt-get install ./nodehosts.deb' small and quick.
cat >"$tmp/etc/apt/apt.conf.d/90nodehosts-e2e" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
# Units that are pointless or fail in a container sharing the host network.
for u in systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
         apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
         getty@tty1.service console-getty.service; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$u"
done
# journald: keep the journal in memory; that is all the test reads.
mkdir -p "$tmp/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$tmp/etc/systemd/journald.conf.d/e2e.conf"
if (( ${#extra[@]} )); then
    cp /etc/resolv.conf "$tmp/etc/resolv.conf"
    cp -l "$cache/apt-archives/$suite"/*.deb "$tmp/var/cache/apt/archives/" 2>/dev/null || true
    { chroot "$tmp" apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -qq "${extra[@]}"; } \
        >>"$cache/roots/.$name.log" 2>&1 || { tail -n 30 "$cache/roots/.$name.log" >&2; exit 1; }
    cp -n "$tmp"/var/cache/apt/archives/*.deb "$cache/apt-archives/$suite/" 2>/dev/null || true
fi
if [[ $variant == lab ]]; then
    # The nodes have their own network namespace, where only /proc/sys/net is writable: the
    # vendor kernel.* and fs.* sysctls (pid_max, protected_*) would make node.sh's
    # `sysctl --system` fail (a VM applies them at boot). Masked the way an admin overrides
    # a vendor file.
    for f in "$tmp"/usr/lib/sysctl.d/*.conf; do
        ln -sf /dev/null "$tmp/etc/sysctl.d/$(basename "$f")"
    done
fi
chroot "$tmp" apt-get clean
echo "$recipe" >"$tmp/.nodehosts-e2e-recipe"

rm -rf "$root"
mv "$tmp" "$root"
echo "mkroot: $name ready in $((SECONDS - start))s" >&2
echo "$root"
