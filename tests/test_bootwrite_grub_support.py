"""bootplan.grub_support: the writer asks the same GRUB evaluation as the reader whether GRUB reads a variable.

A mention of ${saved_entry} in a test or a menu entry is not a read; a default that
GRUB runs is. The grubenv is made by grub-editenv, the configs come from upstream
(tests/fixtures/grub_configs.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ostreewatch import bootplan, layout, state
from ostreewatch.sysroot import Root
from tests.fixtures import grub_configs as cfgs

MENTIONS_ONLY = """\
load_env
set default="0"
if [ "${saved_entry}" = "x" ]; then echo saved; fi
if [ "${next_entry}" ]; then echo next; fi
menuentry "a" { echo $saved_entry $next_entry }
"""


def _sysroot(tmp_path: Path, cfg: str, env: dict[str, str]) -> str:
    grub = tmp_path / "boot" / "grub2"
    grub.mkdir(parents=True)
    (grub / "grub.cfg").write_text(cfg)
    subprocess.run(["grub-editenv", str(grub / "grubenv"), "create"], check=True, timeout=30)
    for key, value in env.items():
        subprocess.run(["grub-editenv", str(grub / "grubenv"), "set", f"{key}={value}"], check=True, timeout=30)
    return str(tmp_path)


@pytest.mark.parametrize(
    ("cfg", "env", "default", "nxt"),
    [
        (cfgs.generated(), {}, True, True),
        # A pending one-shot shadows saved_entry for one boot only: saved_entry is still read.
        (cfgs.generated(), {"next_entry": "ostree-1"}, True, True),
        # GRUB_DEFAULT=0: 00_header still honours a one-shot next_entry (grub2-reboot), not saved_entry.
        (cfgs.generated(default="0"), {}, False, True),
        (cfgs.bootupd_static(), {"saved_entry": "ostree-1"}, False, False),
        (cfgs.bootupd_static(greenboot=True), {}, False, False),
        (MENTIONS_ONLY, {}, False, False),
    ],
    ids=["generated", "generated-next-pending", "generated-default-0", "static", "static-greenboot", "mentions"],
)
def test_reads_as_grub_runs_it(tmp_path: Path, cfg: str, env: dict[str, str], default: bool, nxt: bool) -> None:
    sysroot = _sysroot(tmp_path, cfg, env)
    grub_dir, support = bootplan.grub_support(sysroot)
    assert grub_dir == os.path.join(os.path.realpath(sysroot), "boot/grub2")
    assert support == {"default": default, "next": nxt}
    # The reader agrees: saved_entry set in the grubenv is ignored exactly where the writer would not write it.
    subprocess.run(["grub-editenv", os.path.join(grub_dir, "grubenv"), "set", "saved_entry=ostree-1"], check=True)
    text, files, _ = state.read_grub_config(state.Root(sysroot))  # type: ignore[misc]
    env_now = dict(env, saved_entry="ostree-1")
    env_now.pop("next_entry", None)
    res = bootplan.grubcfg.evaluate(text, files, env_now)
    assert (res.loads_env and res.reads_saved_entry) == default


def test_no_grub_cfg_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "boot" / "grub2").mkdir(parents=True)
    assert bootplan.grub_support(str(tmp_path)) == (None, {"default": False, "next": False})


@pytest.mark.parametrize(
    ("cfg_dir", "env_dirs", "want"),
    [
        ("boot/grub2", ["boot/grub2"], "boot/grub2/grubenv"),
        # grub.cfg in grub2, a grubenv only in grub: both take that one
        ("boot/grub2", ["boot/grub"], "boot/grub/grubenv"),
        ("boot/grub", ["boot/grub2", "boot/grub"], "boot/grub2/grubenv"),
        # none yet: the writer creates it beside grub.cfg, the reader has none
        ("boot/grub", [], None),
    ],
)
def test_reader_and_writer_take_the_same_grubenv(
    tmp_path: Path, cfg_dir: str, env_dirs: list[str], want: str | None
) -> None:
    """layout.grubenv_location is the one rule: state.py reads the grubenv that bootplan writes."""
    (tmp_path / cfg_dir).mkdir(parents=True)
    (tmp_path / cfg_dir / "grub.cfg").write_text(cfgs.generated())
    for d in env_dirs:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        subprocess.run(["grub-editenv", str(tmp_path / d / "grubenv"), "create"], check=True, timeout=30)
    sysroot = str(tmp_path)
    grub_dir, _ = bootplan.grub_support(sysroot)
    written = bootplan.find_grubenv(sysroot, grub_dir)
    assert written == os.path.join(os.path.realpath(sysroot), want or f"{cfg_dir}/grubenv")
    # what state.py's reader reads (the grubenv that exists, or none)
    assert layout.grubenv_location(Root(sysroot)) == want
