"""`ostreewatch status`: output, JSON shape, exit codes; the sample survives packaging."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ostreewatch import __version__, _interface, boottracker, model
from ostreewatch import cli as cli_module
from ostreewatch.sample import paths_for as sample_paths
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


@pytest.mark.unit
def test_sample_human() -> None:
    p = cli(["status", "--sample"], env={"PYTHONIOENCODING": "utf-8"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    booted = [line for line in lines if line.startswith("●")]
    checksum, serial = BOOTED.split("-", 1)[1].split(".")
    assert booted == [f"● rhcos {checksum[:10]}.{serial} (default)", "● ostree-2-rhcos (default) (booted)"]
    assert any("Version: 410.84.202203081640-0" in line for line in lines)
    assert any("(rollback)" in line and "49.84" not in line for line in lines)
    assert lines[-1] == "Problems: none"
    ascii_out = cli(["status", "--sample"], env={"PYTHONIOENCODING": "ascii"})
    assert ascii_out.returncode == 0 and "●" not in ascii_out.stdout
    assert ascii_out.stdout.replace("* ", "● ") == p.stdout


@pytest.mark.unit
def test_sample_json_is_the_snapshot() -> None:
    p = cli(["status", "--sample", "--json"])
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    # Every property of the snapshot, in the interface's order; read directly, no daemon: no Generation or
    # Version (those are the daemon's, as in /run/ostreewatch/status.json).
    assert list(data) == [name for name in _interface.PROPERTIES if name not in ("Generation", "Version")]
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
        assert f"fedora {s.checksum[:10]}.{s.serial}" in out
    assert out.index("Version: 3") < out.index("Version: 2") < out.index("Version: 1")
    problems = out[out.index("Problems (1):") :].splitlines()
    assert problems[1].startswith(f"  deployment-no-entry [{status[-1].id}]")
    assert "State: not booted" in out


@pytest.mark.unit
def test_short_checksums_stay_unambiguous() -> None:
    a, b, c = "ab" * 32, "ab" * 6 + "cd" * 26, "0123456789" + "f" * 54
    assert cli_module.short_checksums([a, c]) == {a: a[:10], c: c[:10]}
    # a and b share 12 characters: both get 13.
    assert cli_module.short_checksums([a, b, c, a]) == {a: a[:13], b: b[:13], c: c[:13]}
    assert cli_module.short_checksums([]) == {}


@pytest.mark.unit
def test_human_status_for_a_person() -> None:
    """A legend for the booted mark, headers on the mounts, short ids (full with --long; problems as published)."""
    snap = read_snapshot(sample_paths())
    short = cli_module.format_status(snap, "*")
    lines = short.splitlines()
    assert "Deployments (* booted):" in lines and "Boot entries (* booted):" in lines
    header = lines[lines.index("Mounts:") + 1].split()
    assert header == ["MOUNT", "POINT", "RO/RW", "TYPE", "SOURCE", "ROOT"]
    for d in snap.Deployments:
        assert d.checksum not in short and f"{d.osname} {d.checksum[:10]}.{d.serial}" in short
    full = cli_module.format_status(snap, "*", long=True)
    assert all(f"{d.osname} {d.checksum}.{d.serial}" in full for d in snap.Deployments)
    p = cli(["status", "--sample", "--long"])
    assert p.returncode == 0 and snap.Deployments[0].checksum in p.stdout


@pytest.mark.parametrize("make", ["empty-dir", "missing", "file"])
@pytest.mark.unit
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
    # Every path it names is the one given (or under it), and it points at the bundled sample.
    assert str(target) in p.stderr and "`ostreewatch status --sample`" in p.stderr
    assert all(path.startswith(str(target)) for path in re.findall(r"(?<![\w`-])/[\w/.-]+", p.stderr)), p.stderr


@pytest.mark.unit
def test_a_machine_that_is_no_ostree_host_says_so() -> None:
    p = cli(["status", "--offline"])
    if os.path.isdir("/ostree/deploy"):  # an OSTree host: it reads it (the suite runs on Debian, which is none)
        assert p.returncode == 0, p.stderr
        return
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith("ostreewatch: this machine is not an OSTree host: /: not an ostree sysroot (/ostree: ")
    assert "`ostreewatch status --sample`" in p.stderr


@pytest.mark.unit
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
