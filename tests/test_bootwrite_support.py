"""Support for tests/test_bootwrite*.py: real ostree sysroots, snapshots of them, oracles.

Sysroots are built by the real `ostree` tool inside `unshare --user
--map-root-user` with OSTREE_SYSROOT_DEBUG=mutable-deployments (DESIGN.md §4).
"""

from __future__ import annotations

import os
import re
import subprocess
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from ostreewatch import model
from ostreewatch.parse.bls import parse_entry
from tests.fixtures.sysroots import GRUB_CFG, OstreeSysroot, copy_sysroot, write_grub  # noqa: F401 (copy_sysroot: re-exported)


def make_paths(sysroot: str) -> Any:
    try:
        from ostreewatch.state import Paths
    except ImportError:  # helper B's module not there yet: the writer only reads .sysroot
        return SimpleNamespace(sysroot=sysroot, mountinfo="/proc/self/mountinfo", cmdline="/proc/cmdline", run="/run")
    return Paths(sysroot=sysroot)


class RecordingJournal:
    """Collects write_attempt records (the real journald is exercised in test_bootwrite_journal.py)."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []

    def write_attempt(self, **fields: Any) -> None:
        self.records.append(fields)


OSNAME = "test"
N_DEPLOYMENTS = 3

OS_RELEASE = 'ID=test\nVERSION_ID=1\nPRETTY_NAME="Test OS"\n'


def build_sysroot(sysroot: str, work: str) -> None:
    """A real ostree sysroot with three deployments of one commit (entries ostree-1..3-test)."""
    sr = OstreeSysroot(work, path=sysroot).init(OSNAME)
    sr.commit(OSNAME, version="1", kver="6.0.0", osname=OSNAME, os_release=OS_RELEASE, version_metadata=False)
    for _ in range(N_DEPLOYMENTS):
        sr.deploy(OSNAME, os=OSNAME)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """build_sysroot once per test module; copy it (copy_sysroot), never change it."""
    base = tmp_path_factory.mktemp("bootwrite-template")
    sysroot = str(base / "sysroot")
    build_sysroot(sysroot, str(base / "work"))
    return sysroot


def entries_dir(sysroot: str) -> str:
    return os.path.join(os.path.realpath(os.path.join(sysroot, "boot", "loader")), "entries")


def snapshot_of(sysroot: str, bootloader: str) -> model.Snapshot:
    """The BootEntries part of a snapshot, deployments resolved through the boot links."""
    entries = []
    directory = entries_dir(sysroot)
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            bls = parse_entry(name, f.read())
        m = re.search(r"(?:^| )ostree=(\S+)", bls.options)
        deployment = ""
        if m:
            target = os.path.realpath(os.path.join(sysroot, m.group(1).lstrip("/")))
            osname = target.split("/")[-3]  # .../ostree/deploy/OSNAME/deploy/CHECKSUM.SERIAL
            deployment = f"{osname}-{os.path.basename(target)}"
        entries.append(model.BootEntry(id=bls.id, file=name, title=bls.title, version=bls.version,
                                       options=bls.options, deployment=deployment))
    return model.Snapshot(Bootloader=bootloader, BootEntries=tuple(entries))


def grub_editenv(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["grub-editenv", path, *args], capture_output=True, text=True, timeout=30)


def grubenv_list(path: str) -> Dict[str, str]:
    """`grub-editenv FILE list` as a dict; fails the test when grub cannot read the file."""
    out = grub_editenv(path, "list")
    assert out.returncode == 0, out.stderr
    env = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


# A grub2-mkconfig style header (Fedora 00_header): reads next_entry, then saved_entry.
GRUB_CFG_MKCONFIG = GRUB_CFG


# Fedora CoreOS's static config (coreos/bootupd src/grub2/grub-static-pre.cfg + blscfg):
# it loads the grubenv but never reads saved_entry or next_entry.
GRUB_CFG_STATIC = """\
# Static GRUB configuration (as shipped by bootupd on Fedora CoreOS)
set root=$boot
if [ -f ${config_directory}/grubenv ]; then
  load_env -f ${config_directory}/grubenv
elif [ -s $prefix/grubenv ]; then
  load_env
fi
if [ -f $prefix/console.cfg ]; then
  source $prefix/console.cfg
fi
menuentry_id_option="--id"
# a comment naming ${saved_entry} does not count
blscfg
"""

SEED_VARS = [
    "boot_success=1",
    "boot_counter=2",
    "kernelopts=root=UUID=1234 ro rd.lvm.lv=a=b console=ttyS0,115200 path=C:\\dir\\x",
    "menu_auto_hide=1",
]


def seed_grub(sysroot: str, cfg: str = GRUB_CFG_MKCONFIG, directory: str = "boot/grub2") -> str:
    """grub.cfg and a grubenv seeded with other variables (by grub-editenv itself); returns the grubenv path."""
    env = write_grub(sysroot, cfg, directory)
    out = grub_editenv(env, "set", *SEED_VARS)
    assert out.returncode == 0, out.stderr
    return env


LOADER_CONF_SEED = """\
# systemd-boot configuration, hand-written
timeout 5
#console-mode keep
default ostree-3-test.conf
editor no
"""


def seed_loader_conf(sysroot: str, text: str = LOADER_CONF_SEED) -> str:
    path = os.path.join(os.path.realpath(os.path.join(sysroot, "boot", "loader")), "loader.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def bootctl_default(esp: str) -> Optional[str]:
    """The entry id `bootctl list` marks (default), from a private mount namespace where ESP is a mount point."""
    script = ('mount --bind "$1" "$1" && SYSTEMD_RELAX_ESP_CHECKS=1 bootctl --no-pager '
              '--esp-path="$1" --boot-path="$1" list')
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", esp],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    current: List[str] = []
    for block in out.stdout.split("\n\n"):
        if "(default)" in block:
            m = re.search(r"^\s*id: (\S+)", block, re.M)
            if m:
                current.append(m.group(1))
    return current[0] if current else None


