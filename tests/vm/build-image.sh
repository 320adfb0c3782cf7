#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Build a bootable OSTree disk image carrying this checkout's daemon (docs/vm-rig.md):
#     tests/vm/build-image.sh IMAGE GRUB_CFG [--karg ARG]... [--deployments N] [--logind]
# As root. An overlay of $OSTREEWATCH_VM_BASE (the cache is never written) gets `make
# install` (the checkout under test, laid out as packaging/rpm.spec lays it out), the guest
# side of the rig (tests/vm/guest) and the enabled units; it is committed with the cached
# sid tree's ostree 2026.x and deployed into a sparse raw GPT image:
#   p1 BIOS boot (1 MiB), p2 ESP (FAT, GRUB EFI), p3 /boot (ext4, label boot), p4 root (ext4, label root).
# GRUB_CFG (the config under test) becomes /boot/grub/grub.cfg behind a serial-console
# header; GRUB is installed for BIOS (i386-pc, core.img in p1) and UEFI (BOOTX64.EFI on p2).
# --logind: the opt-in logind bridge (docs/logind.md) installed from the package's doc
# directory into /etc and enabled, as an admin would; off by default.
# Everything runs in a private mount namespace: nothing stays mounted when it exits.
set -euo pipefail
if [ "${OW_IN_NS:-}" != 1 ]; then
    exec env OW_IN_NS=1 unshare --mount --propagation private "$0" "$@"
fi
image="$1" grub_cfg="$(realpath "$2")"
shift 2
# audit=1: the kernel logs a seccomp denial only in an audit context (tests/vm/guest/record.d/sandbox.sh).
# With no auditd, every audit record reaches the kernel log through printk_ratelimit() (10 a
# 5 s burst: systemd's own unit records used it up and the seccomp ones were dropped, "kauditd_printk_skb:
# N callbacks suppressed"), then a hold queue of audit_backlog_limit records: the limit off and a
# larger queue keep every record (sysctl.* on the command line: Linux >= 5.8).
kargs=(--karg=root=LABEL=root --karg=rw --karg=console=ttyS0,115200 --karg=audit=1
    --karg=audit_backlog_limit=8192 --karg=sysctl.kernel.printk_ratelimit=0)
deployments=1
logind=0
while [ $# -gt 0 ]; do
    case "$1" in
        # --karg-append: ostree drops a repeated --karg key.
        --karg) kargs+=("--karg-append=$2"); shift 2 ;;
        # N deployments of the commit (serials 0..N-1): a chain can switch entries from its first boot.
        --deployments) deployments="$2"; shift 2 ;;
        --logind) logind=1; shift ;;
        *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vm_tree="${OSTREEWATCH_VM_TREE:-/var/cache/ostreewatch/vm-tree}"
vm_base="${OSTREEWATCH_VM_BASE:-/var/cache/ostreewatch/vm-base}"
[ -f "$vm_base.ok" ] || { echo "build-image.sh: $vm_base is not built (scripts/setup-test-env.sh builds it)" >&2; exit 1; }
t0=$(date +%s%N)
say() { printf '==> build-image: %s (%d ms)\n' "$*" "$(( ($(date +%s%N) - t0) / 1000000 ))" >&2; }

work="$(mktemp -d /var/tmp/ow-vmimage.XXXXXX)"
loop=""
cleanup() {
    # Unmount before detaching the loop device (the namespace's mounts die with it anyway).
    umount -R "$work/tools" 2>/dev/null || true
    umount -R "$work/img" 2>/dev/null || true
    umount "$work/tree" 2>/dev/null || true
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- the tree to commit: the base, the daemon as installed by make, the guest side -------------
mkdir -p "$work/upper" "$work/ovl" "$work/tree"
mount -t overlay overlay -o "lowerdir=$vm_base,upperdir=$work/upper,workdir=$work/ovl" "$work/tree"
say "make install into the tree"
# The call the spec's %install makes; PYTHON_CHROOT byte-compiles with the tree's own python.
make -C "$repo" -s install DESTDIR="$work/tree" PREFIX=/usr PYTHON_SITEDIR=/usr/lib/python3/dist-packages \
    PYTHON_CHROOT="$work/tree" >&2
install -D -m 0755 "$repo/tests/vm/guest/owvm-guest" "$work/tree/usr/libexec/owvm/owvm-guest"
install -D -m 0644 "$repo/tests/vm/guest/owvm-guest.service" "$work/tree/usr/lib/systemd/system/owvm-guest.service"
if [ -d "$repo/tests/vm/guest/record.d" ]; then
    mkdir -p "$work/tree/usr/libexec/owvm/record.d"
    cp "$repo"/tests/vm/guest/record.d/*.sh "$work/tree/usr/libexec/owvm/record.d/" 2>/dev/null || true
fi
# Enabled as the preset would (ostreewatch.service: WantedBy=local-fs.target).
mkdir -p "$work/tree/usr/etc/systemd/system/local-fs.target.wants" "$work/tree/usr/etc/systemd/system/multi-user.target.wants"
ln -sf /usr/lib/systemd/system/ostreewatch.service "$work/tree/usr/etc/systemd/system/local-fs.target.wants/"
ln -sf /usr/lib/systemd/system/owvm-guest.service "$work/tree/usr/etc/systemd/system/multi-user.target.wants/"
if [ "$logind" = 1 ]; then
    # docs/logind.md's steps, from what `make install` put in the doc directory; the commit's
    # /etc is usr/etc (ostree merges it into the deployment's /etc).
    contrib="$work/tree/usr/share/doc/ostreewatch/contrib/logind"
    etc_units="$work/tree/usr/etc/systemd/system"
    install -D -m 0644 "$contrib/ostreewatch-reboot-entry.service" "$etc_units/ostreewatch-reboot-entry.service"
    install -D -m 0644 "$contrib/ostreewatch.conf.example" "$etc_units/systemd-logind.service.d/ostreewatch.conf"
    # systemctl enable: its [Install] WantedBy=multi-user.target.
    ln -sf /etc/systemd/system/ostreewatch-reboot-entry.service "$etc_units/multi-user.target.wants/"
fi
# systemd loads every seccomp filter with the log flag (its SYSTEMD_LOG_SECCOMP, read by the process that
# loads the filter: PID 1's environment): the unit's SystemCallErrorNumber=EPERM denials, silent otherwise,
# become audit records that tests/vm/guest/record.d/sandbox.sh reads. The unit itself is not changed.
mkdir -p "$work/tree/usr/lib/systemd/system.conf.d"
printf '[Manager]\nManagerEnvironment=SYSTEMD_LOG_SECCOMP=1\n' > "$work/tree/usr/lib/systemd/system.conf.d/owvm-seccomp-log.conf"
# The guest logs in nobody; a root password would only invite a console prompt that waits.
echo owvm > "$work/tree/usr/etc/hostname"

# --- the disk ------------------------------------------------------------------------------------
say "partitioning $image"
rm -f "$image"
truncate -s 4G "$image"
sgdisk -o -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+64M -t2:ef00 -c2:esp -n3:0:+512M -t3:8300 -c3:boot \
    -n4:0:0 -t4:8300 -c4:root "$image" > /dev/null
loop="$(losetup -f --show -P "$image")"
# This machine's kernel scans no GPT: partx adds the partitions from user space.
partx -a "$loop" 2>/dev/null || partx -u "$loop"
for i in 1 2 3 4; do
    for _ in $(seq 50); do [ -b "${loop}p$i" ] && break; sleep 0.1; done
    [ -b "${loop}p$i" ] || { echo "build-image.sh: ${loop}p$i never appeared" >&2; exit 1; }
done
mkfs.vfat -n ESP "${loop}p2" > /dev/null 2>&1  # its "Could not get geometry" on a loop device is noise
mkfs.ext4 -q -F -L boot "${loop}p3"
mkfs.ext4 -q -F -L root "${loop}p4"
mkdir -p "$work/img"
mount "${loop}p4" "$work/img"
mkdir -p "$work/img/boot"
mount "${loop}p3" "$work/img/boot"

# --- the tools: the sid tree's ostree and GRUB, in a writable overlay of it ----------------------
mkdir -p "$work/tupper" "$work/tovl" "$work/tools"
mount -t overlay overlay -o "lowerdir=$vm_tree,upperdir=$work/tupper,workdir=$work/tovl" "$work/tools"
mount -t proc proc "$work/tools/proc"
mount --rbind /dev "$work/tools/dev"
mount --rbind /sys "$work/tools/sys"
mount -t tmpfs tmpfs "$work/tools/run"
mount -t tmpfs tmpfs "$work/tools/tmp"
mkdir -p "$work/tools/sysimg" "$work/tools/src"
mount --rbind "$work/img" "$work/tools/sysimg"
mount --bind "$work/tree" "$work/tools/src"
in_tools() { chroot "$work/tools" env -i PATH=/usr/sbin:/usr/bin LC_ALL=C.UTF-8 "$@"; }

say "ostree commit and deploy"
in_tools ostree admin init-fs --modern /sysimg
# sysroot.bootloader none: ostree writes the BLS entries only; GRUB's blscfg reads them.
in_tools ostree --repo=/sysimg/ostree/repo config set sysroot.bootloader none
in_tools ostree admin os-init debian --sysroot=/sysimg
in_tools ostree --repo=/sysimg/ostree/repo commit --branch=debian/vm --bootable \
    --subject="ostreewatch vm rig" --tree=dir=/src > /dev/null
in_tools ostree admin deploy --sysroot=/sysimg --os=debian "${kargs[@]}" debian/vm >&2
# The next ones inherit the kernel arguments of the first (given again, --karg-append would repeat them).
for _ in $(seq 2 "$deployments"); do
    in_tools ostree admin deploy --sysroot=/sysimg --os=debian --retain debian/vm >&2
done

say "GRUB (BIOS and UEFI)"
{
    # The console is the first serial port: the rig reads it when a boot fails.
    printf 'serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n'
    printf 'set timeout=1\n'
    cat "$grub_cfg"
} > "$work/grub.cfg"
# GRUB cannot tell by itself that the loop device's partitions belong to the disk it boots.
mkdir -p "$work/img/boot/grub"
echo "(hd0) $loop" > "$work/img/boot/grub/device.map"
in_tools grub-install --target=i386-pc --boot-directory=/sysimg/boot \
    --modules="part_gpt ext2 blsuki serial" "$loop" 2>&1 | grep -v '^Installation finished' >&2 || true
[ -f "$work/img/boot/grub/i386-pc/core.img" ] || { echo "build-image.sh: grub-install failed" >&2; exit 1; }
# grub-install --target=x86_64-efi refuses a non-FAT directory: the EFI image is made by hand,
# finds /boot by label and loads its modules from /boot/grub/x86_64-efi.
rm -f "$work/img/boot/grub/device.map"
cp -r "$vm_tree/usr/lib/grub/x86_64-efi" "$work/img/boot/grub/"
printf 'search --no-floppy --label boot --set root\nset prefix=($root)/grub\nconfigfile $prefix/grub.cfg\n' \
    > "$work/tools/tmp/embed.cfg"
in_tools grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -p /grub -c /tmp/embed.cfg \
    part_gpt ext2 fat search search_label configfile normal linux echo test loadenv blsuki serial \
    terminal efi_gop all_video gzio
# mtools says "Could not get geometry" on a loop device: noise, unless it fails.
{ mmd -i "${loop}p2" ::/EFI ::/EFI/BOOT && mcopy -i "${loop}p2" "$work/tools/tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI; } \
    2> "$work/mtools.err" || { cat "$work/mtools.err" >&2; exit 1; }
install -m 0644 "$work/grub.cfg" "$work/img/boot/grub/grub.cfg"
in_tools grub-editenv /sysimg/boot/grub/grubenv create
# The stateroot's /var: a persistent journal, so a boot reads the records of the one before.
mkdir -p "$work/img/ostree/deploy/debian/var/log/journal"
sync -f "$work/img/boot"
sync -f "$work/img"
say "done: $image"
