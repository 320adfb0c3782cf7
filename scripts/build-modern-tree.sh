#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Build one newer-Debian tree whose ostree, ostree-boot, GRUB and systemd the
# tests run as oracles (see scripts/setup-test-env.sh, ow_make_modern_trees):
#     scripts/build-modern-tree.sh SUITE DEST PACKAGE...
# debootstrap --variant=minbase SUITE into DEST.tmp.PID, then apt-get install
# PACKAGE... inside it (in a private mount namespace: proc, /dev, /sys, tmpfs
# /run and /tmp), then rename to DEST. Progress lines carry the elapsed seconds.
set -euo pipefail
suite="$1" dest="$2"
shift 2
mirror="${OSTREEWATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
start=$(date +%s)
say() { printf '==> %s tree: %s (%d s)\n' "$suite" "$*" "$(( $(date +%s) - start ))" >&2; }
tmp="$dest.tmp.$$"
log="${OW_TREE_LOG:-$(dirname "$dest")/$suite-build.log}"
# A half-built tree of a builder that died is removed; a live builder's is awaited.
for old in "$dest".tmp.*; do
    [ -e "$old" ] || continue
    if kill -0 "${old##*.}" 2>/dev/null; then
        say "another builder (pid ${old##*.}) is building $old; waiting for it"
        while kill -0 "${old##*.}" 2>/dev/null; do sleep 5; done
        [ -d "$dest" ] && { say "built by the other builder"; exit 0; }
    fi
    rm -rf "$old"
done
say "debootstrap --variant=minbase $suite into $tmp (log: $log)"
if ! debootstrap --variant=minbase "$suite" "$tmp" "$mirror" > "$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$tmp"
    echo "error: debootstrap $suite failed (log: $log)" >&2
    exit 1
fi
# sid's Release file may carry a Valid-Until before this machine's clock.
echo 'Acquire::Check-Valid-Until "false";' > "$tmp/etc/apt/apt.conf.d/99ostreewatch-no-valid-until"
printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
say "apt-get install $*"
if ! unshare --mount --propagation private /bin/bash -euc '
    t="$1"; shift
    mount -t proc proc "$t/proc"
    mount --rbind /dev "$t/dev"
    mount --rbind /sys "$t/sys"
    mount -t tmpfs tmpfs "$t/run"
    mount -t tmpfs tmpfs "$t/tmp"
    cp /etc/resolv.conf "$t/etc/resolv.conf" 2>/dev/null || true
    export DEBIAN_FRONTEND=noninteractive
    chroot "$t" apt-get update -q
    chroot "$t" apt-get install -y -q --no-install-recommends "$@"
    chroot "$t" apt-get clean
' bash "$tmp" "$@" >> "$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$tmp"
    echo "error: apt-get install in the $suite tree failed (log: $log)" >&2
    exit 1
fi
rm -rf "$dest"
mv "$tmp" "$dest"
say "ready at $dest"
