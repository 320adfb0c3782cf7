#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The guest tree of the real-boot tests (tests/vm, docs/vm-rig.md), built once per machine:
#     scripts/build-vm-tree.sh TREE BASE
# TREE: a Debian sid tree (debootstrap + apt, by scripts/build-modern-tree.sh) holding the
# kernel, dracut with ostree-boot's dracut module, ostree 2026.x, systemd, GRUB 2.14 (i386-pc
# and x86_64-efi, blscfg) and the daemon's dependencies. Its ostree, grub-install and
# grub-mkimage are also the tools tests/vm/build-image.sh runs (the host's ostree is 2022.7).
# BASE: TREE in the shape an ostree commit needs (kernel and initramfs in
# usr/lib/modules/KVER, etc in usr/etc, home/root/srv/mnt/opt pointing into var), the input
# of every image; BASE.ok marks it complete. Neither is modified by the tests.
set -euo pipefail
tree="$1" base="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
start=$(date +%s)
say() { printf '==> vm tree: %s (%d s)\n' "$*" "$(( $(date +%s) - start ))" >&2; }

OW_VM_PACKAGES="systemd systemd-sysv udev dbus linux-image-amd64 dracut ostree ostree-boot e2fsprogs kmod
util-linux grub-pc-bin grub-efi-amd64-bin grub2-common python3 python3-dbus-next python3-systemd
python3-pyinotify python3-gi gir1.2-glib-2.0 gir1.2-ostree-1.0 polkitd"

if [ ! -x "$tree/usr/bin/ostree" ] || [ ! -e "$tree/vmlinuz" ]; then
    say "building the sid tree $tree"
    # shellcheck disable=SC2086
    OW_TREE_LOG="$(dirname "$tree")/vm-tree-build.log" "$here/build-modern-tree.sh" sid "$tree" $OW_VM_PACKAGES
fi

tmp="$base.tmp.$$"
rm -rf "$base" "$base.ok" "$base".tmp.*
say "copying $tree to $tmp (xattrs kept; no proc, sys, dev, run, tmp, boot contents, apt caches)"
mkdir -p "$tmp"
tar -C "$tree" --xattrs --xattrs-include='*' --acls --numeric-owner \
    --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* --exclude=./run/* --exclude=./tmp/* \
    --exclude=./boot/* --exclude=./var/cache/apt/* --exclude=./var/lib/apt/lists/* \
    --exclude=./vmlinuz* --exclude=./initrd.img* -cf - . | tar -C "$tmp" --xattrs --xattrs-include='*' -xpf -

kver="$(basename "$(ls -d "$tmp"/usr/lib/modules/*/ | head -1)")"
say "kernel $kver"
cp "$tree/boot/vmlinuz-$kver" "$tmp/usr/lib/modules/$kver/vmlinuz"
: > "$tmp/etc/machine-id"
echo 'LABEL=boot /boot ext4 defaults 1 2' > "$tmp/etc/fstab"
# systemd-firstboot prompts on the console when /etc/machine-id is empty: the boot would hang.
ln -sf /dev/null "$tmp/etc/systemd/system/systemd-firstboot.service"
# Without composefs by default; the karg ostree.prepare-root.composefs=1 turns it on per image.
printf '[composefs]\nenabled = no\n[sysroot]\nreadonly = true\n' > "$tmp/usr/lib/ostree/prepare-root.conf"
mkdir -p "$tmp/var/log/journal"  # a persistent journal: a boot reads the previous boot's records

say "dracut --no-hostonly --add ostree (the initramfs carries prepare-root.conf)"
# Before /root becomes a symlink: dracut fails on a symlinked /root.
unshare --mount --propagation private /bin/bash -euc '
    t="$1" kver="$2"
    mount -t proc proc "$t/proc"
    mount --rbind /dev "$t/dev"
    mount --rbind /sys "$t/sys"
    mount -t tmpfs tmpfs "$t/run"
    mount -t tmpfs tmpfs "$t/tmp"
    chroot "$t" dracut -q --force --no-hostonly --add ostree --kver "$kver" "/usr/lib/modules/$kver/initramfs.img"
' bash "$tmp" "$kver" > "$(dirname "$base")/vm-tree-dracut.log" 2>&1 || {
    tail -20 "$(dirname "$base")/vm-tree-dracut.log" >&2
    echo "error: dracut failed in $tmp" >&2
    exit 1
}

say "ostree layout"
for d in home srv mnt opt; do
    rm -rf "${tmp:?}/$d"
    ln -s "var/$d" "$tmp/$d"
done
rm -rf "$tmp/root"
ln -s var/roothome "$tmp/root"
printf 'd /var/home 0755 root root -\nd /var/roothome 0700 root root -\nd /var/srv 0755 root root -\nd /var/mnt 0755 root root -\nd /var/opt 0755 root root -\n' \
    > "$tmp/usr/lib/tmpfiles.d/ostreewatch-vm.conf"
mkdir -p "$tmp/sysroot"
ln -s sysroot/ostree "$tmp/ostree"
mv "$tmp/etc" "$tmp/usr/etc"
mv "$tmp" "$base"
# What the stamp holds is informative only (the recipe's digest): its presence marks BASE complete.
sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1 > "$base.ok"
say "ready: $base"
