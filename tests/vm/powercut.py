"""Scenario f of issue 17: power cuts (QEMU SIGKILLed) during the daemon's boot-default writes.

Booting to multi-user takes 1-2 minutes under TCG, so one boot per kill does not fit CI's
budget. Instead (docs/vm-rig.md "Power cuts"): the image boots once on a qcow2 overlay, the
guest prepares the write and says ARMED on ttyS1 (a socket here, so the host can also
write to it); the host stops the VM (QMP `stop` flushes the disk) and saves its RAM and
device state with QMP `migrate` to a file. Each kill then starts QEMU on a fresh qcow2
overlay of that disk with `-incoming` of that state, tells the guest GO on ttyS1, and
SIGKILLs QEMU a seeded random delay after the guest said WRITE-START. cache=writeback:
the guest's flushes reach the host's disk, what it did not flush is lost with QEMU, as
with a disk that honours FLUSH when the power goes. The killed disk is then judged
offline (judge()) and a few are really booted (the test chooses which).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures import modern
from tests.vm import rig

REPO = rig.REPO
STARTUP_TIMEOUT = 600.0  # the first boot to multi-user (see rig.BOOT_TIMEOUT)
RUN_TIMEOUT = 300.0  # a restore and one write


class Qmp:
    """A minimal QMP client: commands and their answers, events skipped."""

    def __init__(self, path: Path, deadline: float) -> None:
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.cmd("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise RuntimeError("QMP connection closed")
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    def cmd(self, name: str, **args: Any) -> Any:
        """Run command NAME; its "return" value, or raises with its error."""
        self.file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.file.flush()
        while True:
            answer = self._read()
            if "return" in answer:
                return answer["return"]
            if "error" in answer:
                raise RuntimeError(f"QMP {name}: {answer['error']}")

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


@dataclass
class Vm:
    """One QEMU process on a qcow2 disk, its ttyS1 socket and QMP."""

    proc: subprocess.Popen[bytes]
    serial: rig.SerialSocket
    qmp: Qmp

    def kill(self) -> None:
        """SIGKILL QEMU (the power cut) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.close()

    def close(self) -> None:
        """Close the sockets (QEMU already gone)."""
        self.qmp.close()
        self.serial.close()


def qcow2_overlay(backing: Path, dest: Path, backing_format: str) -> Path:
    """A copy-on-write qcow2 DEST over BACKING."""
    rig._run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", backing_format, str(dest)])
    return dest


def to_raw(qcow2: Path, dest: Path) -> Path:
    """A sparse raw copy of a qcow2 disk (its chain flattened), for loop devices and rig.Image."""
    rig._run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(dest)])
    return dest


def start_vm(image: rig.Image, name: str, disk: Path, work: Path, incoming: Path | None = None) -> Vm:
    """QEMU as rig.Image runs it, on the qcow2 DISK (cache=writeback), ttyS1 a socket, QMP; INCOMING: a saved state."""
    work.mkdir(parents=True, exist_ok=True)
    argv = image._qemu_argv(name, work, "bios")
    for i, arg in enumerate(argv):
        if arg.startswith("file:") and arg.endswith("ttyS1.log"):
            argv[i] = f"unix:{work / 'ttyS1.sock'},server=on,wait=off"
        elif arg.startswith("file=") and "if=virtio" in arg:
            argv[i] = f"file={disk},format=qcow2,if=virtio,cache=writeback"
    argv += ["-qmp", f"unix:{work / 'qmp.sock'},server=on,wait=off"]
    if incoming is not None:
        argv += ["-incoming", f"exec:cat {incoming}"]
    for f in ("console.log", "ttyS1.log"):
        (work / f).write_text("")
    (work / "qemu.argv").write_text(" ".join(argv) + "\n")
    with open(work / "qemu.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    serial = rig.SerialSocket(work / "ttyS1.sock", work / "ttyS1.log")
    try:
        serial.connect(deadline, proc)
        qmp = Qmp(work / "qmp.sock", deadline)
    except (OSError, RuntimeError):
        proc.kill()
        proc.wait()
        serial.close()
        raise RuntimeError(f"QEMU did not start: {rig._read(work / 'qemu.log')}") from None
    return Vm(proc, serial, qmp)


# The guest side (sourced by tests/vm/guest/owvm-guest after its standard records): find the
# arguments of both writes, say ARMED, wait for "GO METHOD" on ttyS1 (after a restore),
# write, say when the write began and ended, flush, then let owvm-guest finish and power off.
ARM_SCRIPT = r"""
stty -F /dev/ttyS1 115200 raw -echo
say() { printf 'OWVM %s\n' "$*" > /dev/ttyS1; }
manager() { busctl --json=short get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager "$1"; }
rollback="$(busctl get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager RollbackDeployment \
    | cut -d'"' -f2)"
entry="$(manager BootEntries | python3 -c 'import json, sys
print(*[e["id"]["data"] for e in json.load(sys.stdin)["data"] if e["deployment"]["data"] == sys.argv[1]])' "$rollback")"
echo "$rollback" > target-deployment.txt
echo "$entry" > target-entry.txt
sync
say ARMED
while read -r go method < /dev/ttyS1; do [ "$go" = GO ] && break; done
case "$method" in
    SetDefaultDeployment) arg="$rollback" ;;
    SetDefaultEntry) arg="$entry" ;;
    *) say "BAD $method"; exit 1 ;;
esac
say "WRITE-START $method $arg"
busctl call org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager "$method" s "$arg" > write.txt 2> write.err
rc=$?
say "WRITE-END $rc"
sync
say SYNCED
"""


@dataclass
class Armed:
    """The saved moment before a write: a disk (qcow2) and QEMU's RAM and device state."""

    image: rig.Image
    name: str
    disk: Path
    state: Path
    work: Path
    boot_seconds: float


def arm(image: rig.Image, work: Path, name: str = "pc-arm") -> Armed:
    """Boot IMAGE once to multi-user on a qcow2 overlay, run ARM_SCRIPT up to ARMED, save the VM there."""
    work.mkdir(parents=True, exist_ok=True)
    disk = qcow2_overlay(image.path, work / "armed.qcow2", "raw")
    boot_dir = work / "boot"
    boot_dir.mkdir(exist_ok=True)
    (boot_dir / "cmd.sh").write_text(ARM_SCRIPT)
    start = time.monotonic()
    vm = start_vm(image, name, disk, boot_dir)
    try:
        try:
            vm.serial.wait_line("OWVM ARMED", time.monotonic() + STARTUP_TIMEOUT, vm.proc)
        except rig.BootFailed as e:
            tail = "\n".join(rig._read(boot_dir / "console.log").splitlines()[-rig.CONSOLE_TAIL :])
            raise rig.BootFailed(f"{e}; console tail:\n{tail}") from None
        seconds = time.monotonic() - start
        vm.qmp.cmd("stop")  # drains and flushes the disk: the overlay holds this moment
        state = work / "state.bin"
        vm.qmp.cmd("migrate", uri=f"exec:cat > {state}")
        deadline = time.monotonic() + 300
        while (status := vm.qmp.cmd("query-migrate").get("status")) not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError("saving the VM state took over 300 s")
            time.sleep(0.2)
        if status != "completed":
            raise RuntimeError(f"saving the VM state: migration {status}")
        vm.qmp.cmd("quit")
        vm.proc.wait(timeout=60)
    finally:
        if vm.proc.poll() is None:
            vm.proc.kill()
            vm.proc.wait()
        vm.close()
    return Armed(image, name, disk, state, work, seconds)


@dataclass
class Run:
    """One restore of the armed moment: the write, when it began and ended, and the disk it left."""

    label: str
    method: str
    disk: Path
    delay: float | None  # seconds after WRITE-START when QEMU was killed; None: the write ran to the end
    write_seconds: float | None = None  # WRITE-START to WRITE-END when seen
    ended_before_kill: bool = False
    serial: str = ""
    records: Path | None = None


def restore_and_write(armed: Armed, label: str, method: str, delay: float | None) -> Run:
    """Restore ARMED on a fresh overlay, start METHOD; SIGKILL QEMU DELAY s after WRITE-START (None: let it end)."""
    work = armed.work / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    disk = qcow2_overlay(armed.disk, work / "disk.qcow2", "qcow2")
    # The same fw_cfg files as the saved VM had (QEMU rebuilds the device from the command line).
    shutil.copyfile(armed.work / "boot" / "cmd.sh", work / "cmd.sh")
    vm = start_vm(armed.image, armed.name, disk, work, incoming=armed.state)
    run = Run(label, method, disk, delay)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while vm.qmp.cmd("query-status")["status"] not in ("paused", "running"):
            if vm.proc.poll() is not None or time.monotonic() > deadline:
                raise rig.BootFailed(f"{label}: the saved state never loaded: {rig._read(work / 'qemu.log')}")
            time.sleep(0.1)
        # The source was stopped, so the loaded VM waits paused ("postmigrate"/"paused") until told.
        while vm.qmp.cmd("query-migrate").get("status", "completed") not in ("completed", "none"):
            time.sleep(0.1)
        vm.qmp.cmd("cont")
        # A line sent at once after `cont` can be lost (seen once): sent again until the guest answers.
        for _ in range(10):
            vm.serial.send(f"GO {method}")
            try:
                t0, _ = vm.serial.wait_line("OWVM WRITE-START", time.monotonic() + 5, vm.proc)
                break
            except rig.BootFailed:
                if vm.proc.poll() is not None:
                    raise
        else:
            raise rig.BootFailed(f"{label}: the restored guest never began the write")
        if delay is None:
            t1, line = vm.serial.wait_line("OWVM WRITE-END", deadline, vm.proc)
            run.write_seconds = t1 - t0
            run.ended_before_kill = True
            vm.serial.wait_line("OWVM SYNCED", deadline, vm.proc)
            vm.proc.wait(timeout=RUN_TIMEOUT)  # owvm-guest records and powers off
            vm.close()
        else:
            time.sleep(max(0.0, t0 + delay - time.monotonic()))
            vm.kill()
            with vm.serial.lock:
                ends = [t for t, line in vm.serial.times if line.startswith("OWVM WRITE-END")]
            if ends:
                run.write_seconds = ends[0] - t0
                run.ended_before_kill = True
    finally:
        if vm.proc.poll() is None:
            vm.kill()
    run.serial = rig._read(work / "ttyS1.log")
    return run


# --- the offline judgement ---------------------------------------------------------------------------

_LOADER_N = re.compile(r"loader\.\d+")
_OSTREE_BOOT = re.compile(r"boot\.(\d+)(\.\d+)?")


@dataclass
class Judgement:
    """What a killed disk holds, read offline: GRUB's choice, ostree's status, the daemon's read, leftovers."""

    label: str
    grub_deployment: str = ""  # the deployment GRUB (grub-emu 2.14) boots: its entry's ostree= resolved
    grub_entry_linux: str = ""
    ostree_ids: list[str] = field(default_factory=list)  # `ostree admin status --json`, default first
    daemon: dict[str, Any] = field(default_factory=dict)  # `ostreewatch status --offline --json`
    leftovers: list[str] = field(default_factory=list)  # paths (as in the sysroot) a completed write leaves not
    silent: list[str] = field(default_factory=list)  # leftovers no published problem names
    stale_boot: list[str] = field(default_factory=list)  # ostree/boot.* leftovers (each must be stale-boot-dir)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the test's output."""
        problems = sorted({p["code"] for p in self.daemon.get("Problems", [])})
        return (
            f"grub boots {self.grub_deployment[-12:] or '-'}, ostree default "
            f"{self.ostree_ids[0][-12:] if self.ostree_ids else '-'}, leftovers {self.leftovers or 'none'}, "
            f"problems {problems or 'none'}"
            + (f"; stale-boot-dir: {self.stale_boot}" if self.stale_boot else "")
            + (f"; FAILED: {'; '.join(self.failures)}" if self.failures else "")
        )


def leftovers(root: Path) -> list[str]:
    """What an interrupted write can leave (paths in the sysroot): loader.N beside the link, temp files, boot.N.M."""
    out: list[str] = []
    boot = root / "boot"
    target = os.readlink(boot / "loader") if (boot / "loader").is_symlink() else ""
    for name in sorted(os.listdir(boot)):
        if _LOADER_N.fullmatch(name) and name != target.rstrip("/"):
            out.append(f"/boot/{name}")
        elif name.startswith("loader") and name not in ("loader",) and not _LOADER_N.fullmatch(name):
            out.append(f"/boot/{name}")  # loader.tmp: ostree's link swap interrupted
    for sub in ("grub", "loader", "loader/entries"):
        d = boot / sub
        if d.is_dir():
            out += [f"/boot/{sub}/{n}" for n in sorted(os.listdir(d)) if "tmp" in n.lower() or n.startswith(".")]
    bootversion = target.rstrip("/").rsplit(".", 1)[-1] if target else ""
    ostree = root / "ostree"
    links = {n: os.readlink(ostree / n) for n in os.listdir(ostree) if (ostree / n).is_symlink()}
    for name in sorted(os.listdir(ostree)):
        m = _OSTREE_BOOT.fullmatch(name)
        if m is None:
            if "tmp" in name.lower():
                out.append(f"/ostree/{name}")
            continue
        stale_link = m.group(2) is None and m.group(1) != bootversion
        if stale_link or (m.group(2) is not None and name not in links.values()):
            out.append(f"/ostree/{name}")
    return out


def resolve_ostree_arg(root: Path, cmdline: str) -> str:
    """The deployment id (OS-CSUM.SERIAL) an ostree= argument leads to in ROOT; "" when it leads nowhere."""
    m = re.search(r"(?:^|\s)ostree=(\S+)", cmdline)
    if m is None:
        return ""
    path = Path(os.path.realpath(root / m.group(1).lstrip("/")))
    try:
        rel = path.relative_to(root)
    except ValueError:
        return ""
    parts = rel.parts
    if len(parts) != 5 or parts[:2] != ("ostree", "deploy") or parts[3] != "deploy" or not path.is_dir():
        return ""
    return f"{parts[2]}-{parts[4]}"


def ostreewatch_offline(root: Path) -> dict[str, Any]:
    """`ostreewatch status --offline --json` of the checkout under test on the sysroot ROOT (no run dir)."""
    with tempfile.TemporaryDirectory(prefix="ow-pc-run-") as run:
        r = subprocess.run(
            [str(REPO / ".venv/bin/ostreewatch"), "status", "--offline", "--json", f"--sysroot={root}", f"--run={run}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if r.returncode != 0:
        raise AssertionError(f"ostreewatch status --offline failed ({r.returncode}): {r.stderr}")
    value = json.loads(r.stdout)
    assert isinstance(value, dict)
    return value


def judge(image: rig.Image, disk: Path, label: str) -> Judgement:
    """The offline judgement of a killed qcow2 DISK (a raw copy; ext4 replays its journal there, as at boot)."""
    j = Judgement(label)
    raw = to_raw(disk, disk.with_suffix(".judge.raw"))
    try:
        flat = rig.Image(raw, image.options, disk.parent)
        with flat.mounted() as root:
            j.ostree_ids = [f"{d['stateroot']}-{d['checksum']}.{d['serial']}" for d in modern.status_json(str(root))]
            j.daemon = ostreewatch_offline(root)
            menu = modern.grub_emu(str(root / "boot"), image.options.grub_cfg)
            j.grub_entry_linux = menu.booted_linux
            j.grub_deployment = resolve_ostree_arg(root, menu.booted_cmdline)
            j.leftovers = leftovers(root)
    finally:
        raw.unlink(missing_ok=True)
    if not j.grub_entry_linux:
        j.failures.append(f"GRUB loads no kernel on Enter (menu {menu.titles})")
    if not j.grub_deployment:
        j.failures.append(f"GRUB boots no deployment (menu {menu.titles}, kexec {menu.booted_cmdline!r})")
    elif j.grub_deployment not in j.ostree_ids:
        j.failures.append(f"GRUB boots {j.grub_deployment}, not a deployment ostree lists ({j.ostree_ids})")
    deps = [d["id"] for d in j.daemon.get("Deployments", [])]
    if deps != j.ostree_ids:
        j.failures.append(f"the daemon's deployments {deps} are not ostree's {j.ostree_ids}")
    # DefaultDeployment is the deployment the default entry boots (saved_entry's, not ostree's first).
    entries = {e["id"]: e.get("deployment", "") for e in j.daemon.get("BootEntries", [])}
    said = entries.get(j.daemon.get("DefaultEntry", ""), "")
    if j.grub_deployment and not (said == j.daemon.get("DefaultDeployment") == j.grub_deployment):
        j.failures.append(
            f"the daemon says entry {j.daemon.get('DefaultEntry')!r} ({said}), DefaultDeployment "
            f"{j.daemon.get('DefaultDeployment')}, boots; GRUB boots {j.grub_deployment}"
        )
    problems = j.daemon.get("Problems", [])
    j.silent = unpublished(j.leftovers, [p.get("subject", "") for p in problems])
    if j.silent:
        j.failures.append(f"leftovers no problem names: {j.silent}")
    j.stale_boot, unnamed = stale_boot_dirs(j.leftovers, problems)
    if unnamed:
        j.failures.append(f"ostree/boot leftovers not published as stale-boot-dir: {unnamed}")
    return j


# A cut between libostree creating the new ostree/boot.N.M (the links of a reordered deployment
# list whose boot configurations are unchanged) and swapping ostree/boot.N to it leaves that
# directory unused (harmless to booting: ostree/boot.N still leads to the old, complete links).
# The reader publishes it as stale-boot-dir, like every boot link farm ostree's cleanup removes.
_STALE_BOOT = re.compile(r"/ostree/boot\.\d+(?:\.\d+)?")


def unpublished(paths: list[str], subjects: list[str]) -> list[str]:
    """PATHS no problem subject names (itself or a parent)."""
    named = [s.rstrip("/") for s in subjects if s]
    return [p for p in paths if not any(p == s or p.startswith(s + "/") for s in named)]


def stale_boot_dirs(paths: list[str], problems: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The ostree/boot.N and boot.N.M among PATHS: (all of them, those no stale-boot-dir problem names)."""
    named = {p.get("subject", "") for p in problems if p.get("code") == "stale-boot-dir"}
    boot = [p for p in paths if _STALE_BOOT.fullmatch(p)]
    return boot, [p for p in boot if p not in named]


@contextlib.contextmanager
def raw_image(image: rig.Image, disk: Path, name: str) -> Iterator[rig.Image]:
    """A killed qcow2 DISK as a raw rig.Image (to boot it for real); removed after."""
    work = disk.parent / f"{name}-boot"
    work.mkdir(parents=True, exist_ok=True)
    raw = to_raw(disk, work / "disk.img")
    try:
        yield rig.Image(raw, image.options, work)
    finally:
        raw.unlink(missing_ok=True)
