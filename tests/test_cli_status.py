"""`ostreewatch status`: output, JSON shape, exit codes; the sample survives packaging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ostreewatch import boottracker, model
from ostreewatch.state import read_snapshot
from tests.fixtures.sysroots import OstreeSysroot

ROOT = Path(__file__).resolve().parent.parent
BOOTED = "rhcos-b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0"


def cli(
    args: list[str], env: dict | None = None, cwd: str | None = None, pythonpath: str | None = None
) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    e["PYTHONPATH"] = pythonpath or str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "ostreewatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=e,
        cwd=cwd or str(ROOT),
    )


def test_sample_human() -> None:
    p = cli(["status", "--sample"], env={"PYTHONIOENCODING": "utf-8"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    booted = [line for line in lines if line.startswith("●")]
    assert booted == [f"● rhcos {BOOTED.split('-', 1)[1]} (default)", "● ostree-2-rhcos (default) (booted)"]
    assert any("Version: 410.84.202203081640-0" in line for line in lines)
    assert any("(rollback)" in line and "49.84" not in line for line in lines)
    assert lines[-1] == "Problems: none"
    ascii_out = cli(["status", "--sample"], env={"PYTHONIOENCODING": "ascii"})
    assert ascii_out.returncode == 0 and "●" not in ascii_out.stdout
    assert ascii_out.stdout.replace("* ", "● ") == p.stdout


def test_sample_json_is_the_snapshot() -> None:
    p = cli(["status", "--sample", "--json"])
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert list(data) == list(model.PROPERTY_SIGNATURES)
    assert data["BootedDeployment"] == BOOTED and data["Bootloader"] == "grub2"
    for prop in ("Deployments", "BootEntries", "Mounts", "Problems"):
        keys = list(model.key_signatures(prop))
        assert all(list(item) == keys for item in data[prop])
    assert data["Problems"] == []


def test_json_matches_read_snapshot(sysroot_3: OstreeSysroot) -> None:
    paths = sysroot_3.paths()
    p = cli(
        [
            "status",
            "--json",
            "--offline",
            "--sysroot",
            paths.sysroot,
            "--run",
            paths.run,
            "--mountinfo",
            paths.mountinfo,
            "--cmdline",
            paths.cmdline,
        ]
    )
    assert p.returncode == 0, p.stderr
    # BootAssessment (greenboot's variables, boot counting) is added to the state read, as the daemon does.
    want = boottracker.with_assessment(read_snapshot(paths), sysroot=paths.sysroot)
    assert json.loads(p.stdout) == model.snapshot_to_plain(want)


def test_human_lists_deployments_and_problems(sysroot_3: OstreeSysroot) -> None:
    status = sysroot_3.admin_status()  # before: ostree lists only deployments that have an entry
    os.unlink(os.path.join(sysroot_3.entries_dir(), "ostree-1-fedora.conf"))
    paths = sysroot_3.paths()
    p = cli(
        [
            "status",
            "--sysroot",
            paths.sysroot,
            "--run",
            paths.run,
            "--mountinfo",
            paths.mountinfo,
            "--cmdline",
            paths.cmdline,
        ]
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for s in status:
        assert f"fedora {s.checksum}.{s.serial}" in out
    assert out.index("Version: 3") < out.index("Version: 2") < out.index("Version: 1")
    problems = out[out.index("Problems (1):") :].splitlines()
    assert problems[1].startswith(f"  deployment-no-entry [{status[-1].id}]")
    assert "State: not booted" in out


@pytest.mark.parametrize("make", ["empty-dir", "missing", "file"])
def test_not_ostree_exit_1(tmp_path: Path, make: str) -> None:
    target = tmp_path / "x"
    if make == "empty-dir":
        target.mkdir()
    elif make == "file":
        target.write_text("")
    p = cli(["status", "--sysroot", str(target)])
    assert p.returncode == 1
    assert p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("ostreewatch: ")
    assert "Traceback" not in p.stderr


def test_usage_errors() -> None:
    assert cli([]).returncode == 2
    assert cli(["status", "--no-such-option"]).returncode == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sample_survives_packaging(tmp_path: Path) -> None:
    """`pip install .` keeps the sample: build the wheel, run status --sample from it, outside the checkout."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "whl"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "whl").glob("ostreewatch-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        assert "ostreewatch/sample/rhcos.json" in z.namelist()
        z.extractall(site)
    p = cli(["status", "--sample", "--json"], cwd=str(tmp_path), pythonpath=str(site))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["BootedDeployment"] == BOOTED
