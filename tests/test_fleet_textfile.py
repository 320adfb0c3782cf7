"""ostreewatch/textfile.py and ostreewatchd --textfile-dir: the format (promtool as the oracle),
bounded labels, the atomic write, the shipped rules and unit drop-in, and a daemon that stays idle."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ostreewatch import model, state, textfile
from tests.fixtures.fleet_servers import PROMTOOL, wait_until
from tests.fixtures.sysroots import OstreeSysroot
from tests.fixtures.units import UNIT, parse_unit, verify_copy
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib" / "prometheus"
DROPIN = ROOT / "units" / "ostreewatch.service.d" / "textfile.conf.example"
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def promtool_check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)


def samples(text: str) -> dict[str, list[str]]:
    """metric name -> the sample lines (HELP/TYPE left out)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, line
        out.setdefault(m.group(1), []).append(line)
    return out


def booted_paths(sr: OstreeSysroot, tmp: Path, index: int) -> state.Paths:
    """Imitated host booted into deployment INDEX: ostree-booted and a mount table whose / is it."""
    dep = sr.admin_status()[index]
    rel = f"/ostree/deploy/{dep.osname}/deploy/{dep.checksum}.{dep.serial}"
    (tmp / "run").mkdir()
    (tmp / "run" / "ostree-booted").write_bytes(b"")
    (tmp / "mountinfo").write_text(
        f"102 1 252:4 {rel} / rw,relatime shared:1 - xfs /dev/vda4 rw\n"
        "105 102 252:3 / /boot rw,relatime shared:4 - ext4 /dev/vda3 rw\n"
    )
    (tmp / "cmdline").write_text("root=UUID=0 rw\n")
    return state.Paths(
        sysroot=sr.path, run=str(tmp / "run"), mountinfo=str(tmp / "mountinfo"), cmdline=str(tmp / "cmdline")
    )


# --- the format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, escaped",
    [
        ('say "hi"', 'say \\"hi\\"'),
        ("C:\\boot", "C:\\\\boot"),
        ("two\nlines", "two\\nlines"),
        ('\\"\n', '\\\\\\"\\n'),
        ("plain 41.20241201.3.0", "plain 41.20241201.3.0"),
    ],
)
@pytest.mark.unit
def test_label_values_are_escaped_as_the_format_says(raw: str, escaped: str) -> None:
    # The exposition format: in label values \ is \\, " is \" and a newline is \n.
    assert textfile.escape_label_value(raw) == escaped


def test_label_values_are_bounded_and_utf8() -> None:
    assert len(textfile.escape_label_value("v" * 10000)) == textfile.MAX_LABEL_LENGTH
    # A directory name read with surrogateescape: promtool still accepts the file.
    odd = "fedora-\udcff.0"
    text = textfile.render(model.Snapshot(BootedDeployment=odd, DefaultDeployment=odd), 1, 0.0)
    text.encode("utf-8")
    assert promtool_check(text).returncode == 0


def test_real_booted_host_renders_what_ostree_says(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    """Booted into deployment 1 of 3: one pending update (ostree says "pending" for index 0)."""
    marks = {s.id: s.marks for s in sysroot_3.booted_admin_status(1)}
    status = sysroot_3.admin_status()
    assert "pending" in marks[status[0].id]
    snap = state.read_snapshot(booted_paths(sysroot_3, tmp_path, 1))
    text = textfile.render(snap, 7, 1764561600.5)

    lint = promtool_check(text)
    assert lint.returncode == 0 and not lint.stdout and not lint.stderr, lint
    by_name = samples(text)
    for name in (
        "ostreewatch_info",
        "ostreewatch_deployments",
        "ostreewatch_update_pending",
        "ostreewatch_boot_fallback",
        "ostreewatch_problems",
        "ostreewatch_generation",
        "ostreewatch_last_change_timestamp_seconds",
        "ostreewatch_ostree_booted",
    ):
        assert f"# TYPE {name} gauge" in text and f"# HELP {name} " in text, name
        assert name in by_name, name
    assert by_name["ostreewatch_deployments"] == [f"ostreewatch_deployments {len(status)}"]
    assert by_name["ostreewatch_update_pending"] == ["ostreewatch_update_pending 1"]
    assert by_name["ostreewatch_boot_fallback"] == ["ostreewatch_boot_fallback 0"]
    assert by_name["ostreewatch_generation"] == ["ostreewatch_generation 7"]
    assert by_name["ostreewatch_last_change_timestamp_seconds"] == [
        "ostreewatch_last_change_timestamp_seconds 1764561600.5"
    ]
    (info,) = by_name["ostreewatch_info"]
    assert f'booted_deployment="{status[1].id}"' in info and f'default_deployment="{status[0].id}"' in info
    assert f'booted_version="{status[1].version}"' in info and f'default_version="{status[0].version}"' in info
    assert 'bootloader="none"' in info

    # Booted into the default: nothing pending.
    other = tmp_path / "default"
    other.mkdir()
    snap0 = state.read_snapshot(booted_paths(sysroot_3, other, 0))
    assert "ostreewatch_update_pending 0" in textfile.render(snap0, 1, 0.0).splitlines()


@pytest.mark.unit
def test_staged_deployment_is_an_update_pending() -> None:
    snap = model.Snapshot(BootedDeployment="os-a.0", DefaultDeployment="os-a.0", StagedDeployment="os-b.0")
    assert textfile.update_pending(snap)
    assert not textfile.update_pending(dataclasses.replace(snap, StagedDeployment=""))
    # An unbooted sysroot (an image being built) has nothing pending.
    assert not textfile.update_pending(model.Snapshot(DefaultDeployment="os-a.0"))


def test_problem_series_are_bounded_whatever_the_host_holds() -> None:
    problems = tuple(model.Problem(f"made-up-{i}", "m", f"s{i}") for i in range(200))
    problems += (
        model.Problem("entry-unparsable", "m", "a"),
        model.Problem("entry-unparsable", "m", "b"),
        model.Problem("boot-fallback", "m", "x"),
    )
    entries = tuple(model.BootEntry(id=f"e{i}", file=f"e{i}.conf") for i in range(500))
    text = textfile.render(model.Snapshot(Problems=problems, BootEntries=entries), 3, 0.0)
    by_name = samples(text)
    assert len(by_name["ostreewatch_problems"]) == len(textfile.KNOWN_PROBLEM_CODES) + 1
    assert 'ostreewatch_problems{code="other"} 200' in by_name["ostreewatch_problems"]
    assert 'ostreewatch_problems{code="entry-unparsable"} 2' in by_name["ostreewatch_problems"]
    assert by_name["ostreewatch_boot_fallback"] == ["ostreewatch_boot_fallback 1"]
    # Lines do not grow with entries or problems.
    assert len(text.splitlines()) == len(textfile.render(model.Snapshot(), 1, 0.0).splitlines())
    assert promtool_check(text).returncode == 0


@pytest.mark.unit
def test_every_documented_problem_code_has_its_series() -> None:
    doc = (ROOT / "docs" / "problems.md").read_text().partition("## Retired codes")[0]
    codes = set(re.findall(r"^\| `([a-z0-9-]+)` \|", doc, re.M))
    assert codes, "no code found in docs/problems.md"
    # Retired codes have no series: they are never emitted.
    assert codes == set(textfile.KNOWN_PROBLEM_CODES), codes ^ set(textfile.KNOWN_PROBLEM_CODES)


# --- the atomic write -------------------------------------------------------------------------


@pytest.mark.unit
def test_write_replaces_atomically_with_a_readable_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the unit's UMask: node_exporter (another user) must still read the file
    try:
        path = textfile.write_textfile(str(tmp_path), "a 1\n")
        inode = os.stat(path).st_ino
        textfile.write_textfile(str(tmp_path), "a 2\n")
    finally:
        os.umask(old)
    assert Path(path).read_text() == "a 2\n"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.stat(path).st_ino != inode  # a rename, not an in-place rewrite
    assert os.listdir(tmp_path) == [textfile.FILE_NAME]
    assert textfile.remove_textfile(str(tmp_path)) and not textfile.remove_textfile(str(tmp_path))


_FULL_DISK = r"""
import os, subprocess, sys
from ostreewatch import textfile
d = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], check=True)
textfile.write_textfile(d, "old 1\n")
try:
    textfile.write_textfile(d, "x" * 1_000_000)
except OSError as e:
    print("errno", e.errno)
print(sorted(os.listdir(d)))
print(open(os.path.join(d, textfile.FILE_NAME)).read(), end="")
"""


def test_a_full_disk_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    """A real ENOSPC (a 64 KiB tmpfs in a private mount namespace)."""
    target = tmp_path / "tf"
    target.mkdir()
    r = subprocess.run(
        [*PRIVATE_MOUNT_NS, sys.executable, "-c", _FULL_DISK, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=str(ROOT),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["errno 28", f"['{textfile.FILE_NAME}']", "old 1"]


# --- contrib/prometheus and the unit drop-in ----------------------------------------------------


def test_promtool_checks_and_tests_the_rules() -> None:
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(CONTRIB / "ostreewatch.rules.yml")], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check
    test = subprocess.run(
        [PROMTOOL, "test", "rules", "ostreewatch.rules.test.yml"],
        cwd=str(CONTRIB),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


@pytest.mark.unit
def test_rules_and_their_tests_use_only_series_the_renderer_writes() -> None:
    text = textfile.render(model.Snapshot(BootedDeployment="a", DefaultDeployment="a"), 1, 0.0)
    written: dict[str, set] = {}
    for name, lines in samples(text).items():
        written[name] = {k for line in lines for k in re.findall(r'([a-z_]+)="', line)}
    # No YAML parser in the test environment: the files keep one expr / series per line.
    exprs = re.findall(r"^\s+expr: (.+)$", (CONTRIB / "ostreewatch.rules.yml").read_text(), re.M)
    assert len(exprs) == 6
    used = {n for e in exprs for n in re.findall(r"\b(ostreewatch_[a-z_]+)", e)}
    assert used and used <= set(written), used - set(written)
    series = re.findall(r"^\s+- series: '(.+)'$", (CONTRIB / "ostreewatch.rules.test.yml").read_text(), re.M)
    assert len(series) >= 10
    for one in series:
        name, _, labels = one.partition("{")
        if not name.startswith("ostreewatch_"):
            continue
        keys = set(re.findall(r"([a-z_]+)=", labels)) - {"instance", "job"}
        assert name in written and keys == written[name], one


def test_dropin_verifies_and_opens_exactly_the_textfile_directory(tmp_path: Path) -> None:
    dropin = parse_unit(DROPIN.read_text())["Service"]
    assert dropin["ExecStart"][0] == ""  # resets the unit's ExecStart before redefining it
    assert (
        dropin["ExecStart"][1] == "/usr/libexec/ostreewatchd --textfile-dir=/var/lib/node_exporter/textfile_collector"
    )
    assert dropin["ReadWritePaths"] == ["-/var/lib/node_exporter/textfile_collector"]
    assert dropin["ExecStopPost"] == ["-/bin/rm -f /var/lib/node_exporter/textfile_collector/ostreewatch.prom"]
    # systemd-analyze verify loads DIR/ostreewatch.service.d/*.conf beside the unit given by path.
    exe = f"{sys.executable} -m ostreewatch.daemon"
    d = tmp_path / "ostreewatch.service.d"
    d.mkdir()
    (d / "textfile.conf").write_text(DROPIN.read_text().replace("/usr/libexec/ostreewatchd", exe))
    out = verify_copy(tmp_path, UNIT.read_text())
    assert out.strip() == "", out
    # The drop-in is really read: a bad key in it is reported.
    (d / "textfile.conf").write_text(DROPIN.read_text().replace("/usr/libexec/ostreewatchd", exe) + "NoSuchKey=1\n")
    out = verify_copy(tmp_path, UNIT.read_text())
    assert "NoSuchKey" in out and "textfile.conf" in out, out


# --- the daemon -------------------------------------------------------------------------------


def ctxt_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of PID: each wakeup counts."""
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def idle_switches(pid: int, seconds: float = 3.0) -> int:
    before = ctxt_switches(pid)
    time.sleep(seconds)
    return ctxt_switches(pid) - before


@pytest.mark.parametrize("enabled", [False, True])
def test_daemon_writes_at_start_and_on_change_and_never_wakes_idle(
    enabled: bool, system_bus: Any, sysroot_3: OstreeSysroot, tmp_path: Path, daemon_factory: Any
) -> None:
    paths = booted_paths(sysroot_3, tmp_path, 0)
    tf = tmp_path / "textfile"
    tf.mkdir()
    args = ["--textfile-dir", str(tf)] if enabled else []
    # asyncio's debug mode reports any callback that holds the loop for 100 ms (daemon.py).
    d = daemon_factory(system_bus, paths, extra_args=args, env={"OSTREEWATCH_ASYNCIO_DEBUG": "1"})
    d.wait_name()
    prom = tf / textfile.FILE_NAME
    if enabled:
        wait_until(prom.exists, 30, "the textfile at start")
        assert "ostreewatch_generation 1" in prom.read_text().splitlines()
    time.sleep(0.5)  # let the connection's first exchanges settle
    assert idle_switches(d.pid) == 0
    assert not enabled or os.listdir(tf) == [textfile.FILE_NAME]
    if not enabled:
        assert os.listdir(tf) == []
        return

    # A change: a new line in an entry is published, and the file follows with the Generation.
    entry = os.path.join(sysroot_3.entries_dir(), sysroot_3.entry_files()[0])
    with open(entry, "a") as f:
        f.write("options quiet\n")
    wait_until(lambda: d.get_property("Generation") == 2, 30, "generation 2")
    wait_until(lambda: "ostreewatch_generation 2" in prom.read_text().splitlines(), 30, "textfile generation 2")
    stamp = float(samples(prom.read_text())["ostreewatch_last_change_timestamp_seconds"][0].split()[1])
    assert abs(stamp - time.time()) < 300
    time.sleep(0.5)
    assert idle_switches(d.pid) == 0
    assert d.stop() == 0
    assert os.listdir(tf) == []  # removed at a clean stop: the fleet sees the metrics go absent
    err = d.stderr_text()
    assert ("Executing" not in err or " took " not in err) and "Traceback" not in err, err


def test_unwritable_directory_never_stops_the_daemon(
    system_bus: Any, sysroot_3: OstreeSysroot, tmp_path: Path, daemon_factory: Any
) -> None:
    missing = tmp_path / "no-such-dir"
    d = daemon_factory(system_bus, sysroot_3.paths(), extra_args=["--textfile-dir", str(missing)])
    d.wait_name()
    wait_until(lambda: "cannot write the node_exporter textfile" in d.stderr_text(), 30, "the warning")
    assert d.get_property("Generation") == 1 and d.alive()
    assert not missing.exists()
    assert d.stop() == 0


def test_last_boot_outcome_and_fallback_count() -> None:
    """One series per outcome (bounded), 1 on the last boot's; fallbacks counted over the history."""
    from ostreewatch.bootoutcome import OUTCOMES, BootFacts, Expectation, judge

    fell = judge(
        Expectation(boot_id="p", expected_entry="ostree-2"), BootFacts("b1", "ostree-1", tries={"ostree-2": (0, 3)})
    )
    ok = judge(Expectation(boot_id="b1", expected_entry="ostree-2"), BootFacts("b2", "ostree-2"))
    assert (fell.outcome, ok.outcome) == ("fallback", "default")
    snap = model.Snapshot(LastBoot=model.dict_items("LastBoot", ok.to_dict()), BootHistory=(ok, fell, fell))
    by_name = samples(textfile.render(snap, 1, 0.0))
    assert sorted(by_name["ostreewatch_last_boot_outcome"]) == sorted(
        f'ostreewatch_last_boot_outcome{{outcome="{o}"}} {1 if o == "default" else 0}' for o in OUTCOMES
    )
    assert by_name["ostreewatch_boot_fallbacks"] == ["ostreewatch_boot_fallbacks 2"]
    empty = samples(textfile.render(model.Snapshot(), 1, 0.0))
    assert all(line.endswith(" 0") for line in empty["ostreewatch_last_boot_outcome"])
    assert promtool_check(textfile.render(snap, 1, 0.0)).returncode == 0
