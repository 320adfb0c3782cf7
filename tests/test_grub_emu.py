"""parse.grubcfg and state.py against real GRUB: grub-emu 2.14 (sid tree) runs the same config with
the same grubenv and prints `$default` (the evaluator must say the same), and on an ostree-built
sysroot it boots an entry at Enter (the published DefaultEntry must be that entry).

A wrapper grub.cfg sources the config under test (so `$prefix` and
`$config_directory` are the same directory, as on a host), echoes `$default`
and halts. The files sit on a fresh tmpfs at the tree's /boot (tests/fixtures/trees.py).
Upstream GRUB has no `increment`/`decrement` (Fedora's rhboot/grub2 adds them,
grub-core/commands/increment.c): greenboot's countdown branch fails there, but
the branch that matters, `set default=1` when the counter ran out, is plain GRUB
script and is checked here; the countdown is checked against Fedora's source
in tests/test_parse_grubcfg.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ostreewatch.parse.grubcfg import evaluate
from ostreewatch.state import read_snapshot
from tests.fixtures import grub_configs as cfgs
from tests.fixtures import trees
from tests.fixtures.sysroots import OstreeSysroot

WRAPPER = 'source $prefix/test.cfg\necho "OWDEFAULT=[${default}]"\nhalt\n'

STATIC = cfgs.bootupd_static()
GREENBOOT = cfgs.bootupd_static(greenboot=True)
GENERATED = cfgs.generated()

CASES = {
    "static-saved-next": (STATIC, {}, {"saved_entry": "ostree-1", "next_entry": "ostree-2"}),
    "static-grubenv-default": (STATIC, {}, {"default": "ostree-1"}),
    "static-custom-saved": (STATIC, {"custom.cfg": 'set default="${saved_entry}"\n'}, {"saved_entry": "ostree-1"}),
    "static-user-literal": (STATIC, {"user.cfg": "set default=ostree-2\n"}, {"saved_entry": "ostree-1"}),
    "greenboot-0": (GREENBOOT, {}, {"boot_counter": "0", "boot_success": "0"}),
    "greenboot-minus-1": (GREENBOOT, {}, {"boot_counter": "-1", "boot_success": "0"}),
    "greenboot-success": (GREENBOOT, {}, {"boot_counter": "0", "boot_success": "1"}),
    "greenboot-unarmed": (GREENBOOT, {}, {"boot_success": "0", "saved_entry": "ostree-1"}),
    "generated-saved": (GENERATED, {}, {"saved_entry": "ostree-1"}),
    "generated-next": (GENERATED, {}, {"saved_entry": "ostree-1", "next_entry": "ostree-2"}),
    "generated-empty": (GENERATED, {}, {}),
    "generated-fallback": (GENERATED, {}, {"saved_entry": "ostree-1", "boot_counter": "0", "boot_success": "0"}),
    "generated-0": (cfgs.generated(default="0"), {}, {"saved_entry": "ostree-1"}),
}


def run_grub_emu(tmp: Path, env_path: str, env: dict[str, str], copy_boot: str) -> subprocess.CompletedProcess:
    """GRUB 2.14's grub-emu (sid tree) on a tmpfs /boot filled by the shell command COPY_BOOT, with ENV in
    the grubenv at ENV_PATH; stdin: Enter, x, c, halt, Enter - never /dev/null (emu spins on "Press any key")."""
    subprocess.run(["grub-editenv", env_path, "create"], check=True, timeout=30)
    if env:
        subprocess.run(["grub-editenv", env_path, "set", *(f"{k}={v}" for k, v in env.items())], check=True, timeout=30)
    devmap = tmp / "device.map"
    devmap.write_text("")
    return trees.run_in_tree(
        trees.SID,
        ["timeout", "15", "grub-emu", "-r", "host", "-d", "/boot/grub", "-m", "/tmp/device.map"],
        binds={str(devmap): "/tmp/device.map"},
        userns=False,
        check=False,
        input="\rxchalt\r",
        setup=f'mount -t tmpfs tmpfs "$M/boot" && {copy_boot}',
        timeout=60,
    )


def grub_default(tmp: Path, cfg: str, files: dict[str, str], env: dict[str, str]) -> str:
    """$default after GRUB 2.14 ran CFG (as test.cfg) with FILES beside it and a grubenv holding ENV."""
    grub = tmp / "grub"
    grub.mkdir(parents=True)
    (grub / "grub.cfg").write_text(WRAPPER)
    (grub / "test.cfg").write_text(cfg)
    for name, text in files.items():
        (grub / name).write_text(text)
    p = run_grub_emu(tmp, str(grub / "grubenv"), env, f'cp -r {grub} "$M/boot/grub"')
    m = re.search(r"OWDEFAULT=\[(.*?)\]", p.stdout)
    assert m, f"grub-emu printed no default (rc {p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}"
    return m.group(1)


@pytest.mark.parametrize("case", list(CASES))
def test_evaluator_agrees_with_grub(tmp_path: Path, case: str) -> None:
    cfg, files, env = CASES[case]
    ours = evaluate(cfg, dict(files, grubenv=""), env)
    assert ours.default is not None and ours.unknown == ()
    assert ours.default == grub_default(tmp_path, cfg, files, env)


def test_the_oracle_can_disagree(tmp_path: Path) -> None:
    """The comparison above can fail: GRUB reports a default that differs between two environments."""
    assert grub_default(tmp_path / "a", GENERATED, {}, {"saved_entry": "x1"}) == "x1"
    assert grub_default(tmp_path / "b", GENERATED, {}, {"saved_entry": "x2"}) == "x2"


# --- end to end: the entry GRUB boots on an ostree-built sysroot is the published DefaultEntry -------

BOOTS_WRAPPER = (
    "terminfo -g 1000x40 console\nsource $prefix/test.cfg\nset timeout_style=menu\nset timeout=-1\nset debug=linux\n"
)


def grub_boots(tmp: Path, sysroot: OstreeSysroot, cfg: str, env: dict[str, str]) -> str:
    """The ostree= argument of the entry GRUB 2.14 boots when Enter is pressed at its menu.

    /boot as GRUB sees it: the sysroot's entries and kernels on a fresh tmpfs (blscfg reads
    /boot/loader/entries only at the root of a mount), grub/ with the config and a grubenv.
    """
    boot = tmp / "boot"
    (boot / "loader").mkdir(parents=True)
    shutil.copytree(sysroot.entries_dir(), boot / "loader" / "entries")
    shutil.copytree(os.path.join(sysroot.path, "boot", "ostree"), boot / "ostree", symlinks=True)
    (boot / "grub").mkdir()
    (boot / "grub" / "grub.cfg").write_text(BOOTS_WRAPPER)
    (boot / "grub" / "test.cfg").write_text(cfg)
    p = run_grub_emu(tmp, str(boot / "grub" / "grubenv"), env, f'cp -a {boot}/. "$M/boot/"')
    m = re.search(r"Not performing 'kexec [^']*--command-line=[^']*\bostree=(\S+?)[\s']", p.stdout)
    assert m, f"grub-emu booted nothing (rc {p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}"
    return m.group(1)


@pytest.mark.parametrize(
    "kind,env",
    [
        ("static", {"saved_entry": "ostree-1-fedora", "next_entry": "ostree-1-fedora"}),
        ("greenboot", {"boot_counter": "0", "boot_success": "0"}),
        ("greenboot", {"boot_counter": "3", "boot_success": "1"}),
        ("generated", {"saved_entry": "ostree-1-fedora"}),
        ("generated", {"saved_entry": "ostree-1-fedora", "next_entry": "ostree-2-fedora"}),
    ],
    ids=["static-saved", "greenboot-ran-out", "greenboot-healthy", "generated-saved", "generated-next"],
)
def test_grub_boots_the_published_default(
    tmp_path: Path, sysroot_3: OstreeSysroot, kind: str, env: dict[str, str]
) -> None:
    cfg = {"static": STATIC, "greenboot": GREENBOOT, "generated": GENERATED}[kind]
    grubenv = sysroot_3.write_grub(cfg)
    if env:
        subprocess.run(["grub-editenv", grubenv, "set", *(f"{k}={v}" for k, v in env.items())], check=True, timeout=30)
    snap = read_snapshot(sysroot_3.paths())
    default = next(e for e in snap.BootEntries if e.id == snap.DefaultEntry)
    assert grub_boots(tmp_path, sysroot_3, cfg, env) == default.ostree
