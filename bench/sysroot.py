"""Real ostree sysroots for the benchmarks, built by the real `ostree` tool.

Every ostree call runs inside `unshare --user --map-root-user` with
OSTREE_SYSROOT_DEBUG=mutable-deployments (DESIGN.md §4: as real root, deploy
would FIFREEZE the root filesystem and chattr +i the deployments).
"""

from __future__ import annotations

import os
import subprocess
from typing import List, Optional

from tests.fixtures.sysroots import GRUB_CFG, OSTREE_ENV, USERNS, OstreeSysroot, run_ostree  # noqa: F401 (GRUB_CFG: re-exported)

OSNAME = "bench"
REFS = ("bench/a", "bench/b")  # two commits with different kernels: deploying them in turn swaps `loader`

# os-release as a plain OS ships it; the commits carry no `version` metadata.
OS_RELEASE = 'NAME=Bench\nID=bench\nVERSION="{v}"\nPRETTY_NAME="Bench {v}"\n'


def ostree_env() -> dict:
    return dict(os.environ, **OSTREE_ENV)


def userns(argv: List[str], **kw) -> subprocess.CompletedProcess:
    """Run argv as mapped root in a user namespace (see module doc)."""
    return subprocess.run(USERNS + argv, env=ostree_env(), capture_output=True, text=True, **kw)


def build_sysroot(sysroot: str, grub: bool = False) -> str:
    """An unbooted sysroot with two deployments (refs bench/a, bench/b); with grub, a grubenv too.

    Built by the shared builder (tests/fixtures/sysroots.py OstreeSysroot)."""
    sr = OstreeSysroot(os.path.dirname(os.path.abspath(sysroot)), path=sysroot).init(OSNAME)
    for ref in REFS:
        v = ref.rsplit("/", 1)[1]
        sr.commit(ref, version=v, kver=f"6.1.0-{v}", osname=OSNAME, os_release=OS_RELEASE.format(v=v),
                  version_metadata=False, timestamp="2020-01-01")
    for ref in REFS:
        sr.deploy(ref, os=OSNAME, retain=False)
    if grub:
        sr.write_grub()
    return sysroot


def deploy(sysroot: str, ref: str) -> None:
    """One real `ostree admin deploy` (no --retain: ostree prunes back to two deployments)."""
    run_ostree(["admin", "deploy", f"--sysroot={sysroot}", f"--os={OSNAME}", ref])


def status(sysroot: str) -> str:
    return run_ostree(["admin", "status", f"--sysroot={sysroot}"]).stdout


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
