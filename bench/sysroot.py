"""Real ostree sysroots for the benchmarks, built by the real `ostree` tool.

Every ostree call runs inside `unshare --user --map-root-user` with
OSTREE_SYSROOT_DEBUG=mutable-deployments (DESIGN.md §4: as real root, deploy
would FIFREEZE the root filesystem and chattr +i the deployments).
"""

from __future__ import annotations

import os
import subprocess
from typing import List, Optional

OSNAME = "bench"
REFS = ("bench/a", "bench/b")  # two commits with different kernels: deploying them in turn swaps `loader`

_BUILD = r"""
set -e
SR="$1"; OS="$2"; WORK="$3"
mkdir -p "$SR"
ostree admin init-fs "$SR" >/dev/null
ostree admin os-init "$OS" --sysroot="$SR" >/dev/null
ostree --repo="$SR/ostree/repo" config set sysroot.bootloader none
for v in a b; do
  T="$WORK/tree-$v"
  mkdir -p "$T/usr/lib/modules/6.1.0-$v" "$T/usr/etc"
  echo "kernel $v" > "$T/usr/lib/modules/6.1.0-$v/vmlinuz"
  echo "initramfs $v" > "$T/usr/lib/modules/6.1.0-$v/initramfs.img"
  printf 'NAME=Bench\nID=bench\nVERSION="%s"\nPRETTY_NAME="Bench %s"\n' "$v" "$v" > "$T/usr/lib/os-release"
  ostree --repo="$SR/ostree/repo" commit --bootable --timestamp=2020-01-01 --owner-uid=0 --owner-gid=0 \
     -b "$OS/$v" --tree=dir="$T" -s "$v" >/dev/null
done
rm -rf "$WORK"/tree-*
ostree admin deploy --sysroot="$SR" --os="$OS" "$OS/a" >/dev/null
ostree admin deploy --sysroot="$SR" --os="$OS" "$OS/b" >/dev/null
"""


# The part of a grub2-mkconfig grub.cfg that reads the environment block (Fedora's 00_header).
GRUB_CFG = """set pager=1
if [ -f ${config_directory}/grubenv ]; then
  load_env -f ${config_directory}/grubenv
elif [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="${saved_entry}"
fi
insmod blscfg
blscfg
"""


def ostree_env() -> dict:
    return dict(os.environ, OSTREE_SYSROOT_DEBUG="mutable-deployments")


def userns(argv: List[str], **kw) -> subprocess.CompletedProcess:
    """Run argv as mapped root in a user namespace (see module doc)."""
    return subprocess.run(["unshare", "--user", "--map-root-user"] + argv, env=ostree_env(),
                          capture_output=True, text=True, **kw)


def build_sysroot(sysroot: str, grub: bool = False) -> str:
    """An unbooted sysroot with two deployments (refs bench/a, bench/b); with grub, a grubenv too."""
    work = os.path.dirname(os.path.abspath(sysroot))
    r = userns(["sh", "-c", _BUILD, "build", sysroot, OSNAME, work], timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"building sysroot failed: {r.stderr.strip()}")
    if grub:
        gdir = os.path.join(sysroot, "boot", "grub2")
        os.makedirs(gdir, exist_ok=True)
        subprocess.run(["grub-editenv", os.path.join(gdir, "grubenv"), "create"], check=True)
        with open(os.path.join(gdir, "grub.cfg"), "w") as f:
            f.write(GRUB_CFG)
    return sysroot


def deploy(sysroot: str, ref: str) -> None:
    """One real `ostree admin deploy` (no --retain: ostree prunes back to two deployments)."""
    r = userns(["ostree", "admin", "deploy", f"--sysroot={sysroot}", f"--os={OSNAME}", ref], timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"ostree admin deploy {ref}: {r.stderr.strip()}")


def status(sysroot: str) -> str:
    r = userns(["ostree", "admin", "status", f"--sysroot={sysroot}"], timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"ostree admin status: {r.stderr.strip()}")
    return r.stdout


def entries_dir(sysroot: str) -> str:
    return os.path.join(sysroot, "boot", "loader", "entries")


def first_ostree_arg(sysroot: str) -> str:
    """The ostree= argument of one existing entry (hand-written entries reuse it so they resolve)."""
    d = entries_dir(sysroot)
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name)) as f:
            for line in f:
                if line.startswith("options"):
                    for word in line.split():
                        if word.startswith("ostree="):
                            return word
    raise RuntimeError("no entry with ostree= in " + d)


def entry_text(n: int, ostree_arg: str, title: Optional[str] = None) -> str:
    return (f"title {title or f'Bench hand-written {n}'}\nversion {n}\n"
            f"options root=UUID=0a0d4701-04bf-45a2-8b9b-f761542a617a rw {ostree_arg}\n"
            f"linux /ostree/bench/vmlinuz-{n}\ninitrd /ostree/bench/initramfs-{n}.img\n")


def write_entries(sysroot: str, count: int, prefix: str = "bench-extra") -> List[str]:
    """Hand-write `count` BLS entries with a resolving ostree= arg into the current entries dir."""
    arg = first_ostree_arg(sysroot)
    d = entries_dir(sysroot)
    names = []
    for i in range(count):
        name = f"{prefix}-{i}.conf"
        with open(os.path.join(d, name), "w") as f:
            f.write(entry_text(i + 10, arg))
        names.append(name)
    return names
