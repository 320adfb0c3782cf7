"""The real-boot rig: build an OSTree disk image carrying this checkout, boot it in QEMU, read back the guest's records.

docs/vm-rig.md explains the pieces. `build_image(ImageOptions(...), dest)` runs
tests/vm/build-image.sh; `Image.boot(name, script)` boots it once (TCG; KVM only where
/dev/kvm is a real one), hands the guest NAME and SCRIPT through fw_cfg, waits for QEMU
to exit (the guest powers off after its records), then copies the guest's records
(/var/lib/owvm/NAME in the stateroot's /var) out of the image into a BootResult. A boot
that never reached the guest script raises BootFailed with the console's tail. The
rare TCG kernel panic before userspace (docs/vm-rig.md) is retried with the grubenv put
back (GRUB's save_env is the only write before userspace). Between boots,
`Image.mounted()` gives the physical root with /boot mounted in it, to change the image
offline (grub-editenv, a file).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
BUILD_IMAGE = REPO / "tests/vm/build-image.sh"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
STATEROOT = "debian"
# Where the guest's records are on the physical root (the stateroot's /var/lib/owvm).
RECORDS = f"ostree/deploy/{STATEROOT}/var/lib/owvm"
# A boot to multi-user takes 40-90 s under TCG here, one that finalizes a staged
# deployment about 1.5 min; a loaded machine (2 cores, shared) can double that.
BOOT_TIMEOUT = 600.0
CONSOLE_TAIL = 60


class BootFailed(AssertionError):
    """A boot that never ran the guest script to its end; the message holds the console's tail."""


class SerialSocket:
    """A guest serial port as a unix socket QEMU serves: every byte read is logged; lines or keys can be sent."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path, self.log = path, log
        self.buf = b""
        self.times: list[tuple[float, str]] = []  # (monotonic, line) as each line arrived
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def connect(self, deadline: float, proc: subprocess.Popen[bytes]) -> None:
        """Connect once QEMU made the socket."""
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.path))
                self.sock = s
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self) -> None:
        assert self.sock is not None
        pending = b""
        with open(self.log, "ab") as log:
            while True:
                try:
                    data = self.sock.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                log.write(data)
                log.flush()
                now = time.monotonic()
                pending += data
                with self.lock:
                    self.buf += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        self.times.append((now, line.decode(errors="replace").strip()))

    def wait_line(self, prefix: str, deadline: float, alive: subprocess.Popen[bytes]) -> tuple[float, str]:
        """(arrival time, line) of the first line starting with PREFIX; raises when QEMU ends or time runs out."""
        while True:
            with self.lock:
                for t, line in self.times:
                    if line.startswith(prefix):
                        return t, line
            if alive.poll() is not None:
                raise BootFailed(f"QEMU exited ({alive.returncode}) before the guest said {prefix!r}")
            if time.monotonic() > deadline:
                raise BootFailed(f"the guest never said {prefix!r}")
            time.sleep(0.02)

    def send(self, line: str) -> None:
        """Write LINE and a newline to the guest's serial port."""
        self.send_keys(line + "\n")

    def send_keys(self, keys: str) -> None:
        """Write KEYS as they are (an escape sequence, a carriage return) to the guest's serial port."""
        assert self.sock is not None
        self.sock.sendall(keys.encode())

    def find(self, text: str, start: int = 0) -> int:
        """The offset just past the first TEXT read at or after offset START; -1 while it has not come."""
        with self.lock:
            at = self.buf.find(text.encode(), start)
        return -1 if at < 0 else at + len(text)

    def close(self) -> None:
        """Close the connection."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        if self.thread is not None:
            self.thread.join(timeout=5)


@dataclass(frozen=True)
class ImageOptions:
    """What varies between images: the grub.cfg text (tests/fixtures/grub_configs.py), kernel arguments, extras."""

    grub_cfg: str
    kargs: tuple[str, ...] = ()
    deployments: int = 1  # deployments of the one commit in the image (2: a rollback from the first boot)
    logind: bool = False  # contrib/logind's opt-in units installed in /etc and enabled (docs/logind.md)


def kvm_usable() -> bool:
    """A /dev/kvm that runs stock guests: not the nested kvm_pvm module of this machine (docs/vm-rig.md)."""
    return os.path.exists("/dev/kvm") and not os.path.exists("/sys/module/kvm_pvm")


def build_image(options: ImageOptions, dest: Path) -> Image:
    """Run tests/vm/build-image.sh into DEST (a directory): DEST/disk.img; raises with its output on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    cfg = dest / "grub.cfg"
    cfg.write_text(options.grub_cfg)
    argv = [str(BUILD_IMAGE), str(dest / "disk.img"), str(cfg)]
    for karg in options.kargs:
        argv += ["--karg", karg]
    argv += ["--deployments", str(options.deployments)]
    if options.logind:
        argv.append("--logind")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    (dest / "build.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"build-image.sh failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return Image(dest / "disk.img", options, dest)


@dataclass
class BootResult:
    """One boot's records as the guest wrote them (see tests/vm/guest/owvm-guest), read on the host."""

    name: str
    dir: Path
    console: str
    seconds: float
    firmware: str
    attempts: int = 1

    def text(self, name: str) -> str:
        """A record file's text ("" when the guest wrote none)."""
        path = self.dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def rc(self, name: str) -> int:
        """The exit code of the command that wrote record NAME."""
        return int(self.text(name + ".rc").strip() or "-1")

    def json(self, name: str) -> Any:
        """A record file parsed as one JSON document; an empty one fails with the command's stderr."""
        text = self.text(name)
        if not text.strip():
            raise AssertionError(
                f"boot {self.name!r}: {name} is empty (exit {self.rc(name)}): {self.text(name + '.err')}"
            )
        return json.loads(text)

    def json_lines(self, name: str) -> list[dict[str, Any]]:
        """A record file of one JSON object a line (journalctl -o json)."""
        return [json.loads(line) for line in self.text(name).splitlines() if line.strip()]

    def props(self, name: str = "props.json") -> dict[str, Any]:
        """What the daemon published (busctl GetAll --json), variants unwrapped to plain values."""
        value = unwrap(self.json(name)["data"][0])
        assert isinstance(value, dict)
        return value

    def units(self) -> dict[str, dict[str, str]]:
        """`systemctl show` of the units the guest records, by unit name."""
        out: dict[str, dict[str, str]] = {}
        for block in self.text("units.txt").split("\n\n"):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if "Id" in fields:
                out[fields["Id"]] = fields
        return out

    def cmdline(self) -> str:
        """/proc/cmdline of the guest."""
        return self.text("cmdline.txt").strip()


@dataclass
class Image:
    """A disk image and its working directory; boots are one at a time."""

    path: Path
    options: ImageOptions
    work: Path
    boots: list[BootResult] = field(default_factory=list)

    @contextlib.contextmanager
    def mounted(self) -> Iterator[Path]:
        """The image's physical root mounted read-write, its /boot partition on root/boot; unmounted after."""
        mnt = Path(tempfile.mkdtemp(prefix="ow-vmmnt-", dir="/var/tmp"))
        loop = _run(["losetup", "-f", "--show", "-P", str(self.path)]).stdout.strip()
        mounted: list[Path] = []
        try:
            # This machine's kernel scans no GPT: partx adds the partitions from user space.
            subprocess.run(["partx", "-a", loop], capture_output=True)
            _wait_for(f"{loop}p4")
            _run(["mount", f"{loop}p4", str(mnt)])
            mounted.append(mnt)
            _run(["mount", f"{loop}p3", str(mnt / "boot")])
            mounted.append(mnt / "boot")
            yield mnt
        finally:
            for m in reversed(mounted):
                subprocess.run(["umount", str(m)], capture_output=True)
            subprocess.run(["losetup", "-d", loop], capture_output=True)
            with contextlib.suppress(OSError):
                mnt.rmdir()

    def _grubenv(self, restore: bytes | None = None) -> bytes | None:
        """The /boot partition's grub/grubenv (None when absent); with RESTORE, write it back first."""
        with self.mounted() as root:
            env = root / "boot" / "grub" / "grubenv"
            if restore is not None:
                env.write_bytes(restore)
            return env.read_bytes() if env.exists() else None

    def boot(
        self,
        name: str,
        script: str = "",
        firmware: str = "bios",
        kill_at: tuple[str, float] | None = None,
        timeout: float = BOOT_TIMEOUT,
        console_keys: Sequence[tuple[str, str]] = (),
    ) -> BootResult:
        """Boot once, the guest running SCRIPT (bash, $OUT its record dir); its records once QEMU exited.

        KILL_AT (MARKER, SECONDS): SIGKILL QEMU SECONDS after the guest printed
        "OWVM MARKER" on ttyS1 (a power cut); the result then holds no records.
        CONSOLE_KEYS: (TEXT, KEYS) pairs, in order: once the console (the first serial port:
        GRUB's menu, then the kernel's) has shown TEXT after the previous pair's, type KEYS
        there (e.g. "\x1b[B\r", Down and Enter in GRUB's menu). The console is then a unix
        socket QEMU serves (console.sock), still logged to console.log; a boot that ends
        before every TEXT came raises BootFailed.
        """
        boot_dir = self.work / "boots" / name
        shutil.rmtree(boot_dir, ignore_errors=True)
        boot_dir.mkdir(parents=True)
        (boot_dir / "cmd.sh").write_text(script)
        grubenv = self._grubenv()
        attempts = 0
        while True:
            attempts += 1
            start = time.monotonic()
            console, killed = self._run_qemu(name, boot_dir, firmware, kill_at, timeout, console_keys)
            seconds = time.monotonic() - start
            serial = (boot_dir / "ttyS1.log").read_text(errors="replace")
            if killed:
                result = BootResult(name, boot_dir / "records", console, seconds, firmware, attempts)
                self.boots.append(result)
                return result
            if f"OWVM DONE {name}" in serial:
                break
            # A TCG guest kernel now and then panics in early boot (docs/vm-rig.md); before
            # userspace started only GRUB wrote to the disk (save_env: a greenboot counter, a
            # consumed next_entry), so with its grubenv put back booting again is the same boot.
            if "Kernel panic" in console and "OWVM BEGIN" not in serial and attempts < 3:
                (boot_dir / f"console.panic{attempts}.log").write_text(console)
                self._grubenv(grubenv)
                continue
            tail = "\n".join(console.splitlines()[-CONSOLE_TAIL:])
            raise BootFailed(f"boot {name!r} ({firmware}) did not finish its guest script; console tail:\n{tail}")
        records = boot_dir / "records"
        with self.mounted() as root:
            src = root / RECORDS / name
            if not src.is_dir():
                raise BootFailed(f"boot {name!r}: the guest wrote no records at /{RECORDS}/{name}")
            shutil.copytree(src, records)
        result = BootResult(name, records, console, seconds, firmware, attempts)
        # For tests/vm/figures.py on kept records (OSTREEWATCH_VM_KEEP=1).
        (boot_dir / "boot.json").write_text(
            json.dumps({"seconds": seconds, "attempts": attempts, "firmware": firmware})
        )
        self.boots.append(result)
        return result

    def _qemu_argv(self, name: str, boot_dir: Path, firmware: str, console_socket: bool = False) -> list[str]:
        argv = ["qemu-system-x86_64", "-machine", "q35", "-m", "2048", "-smp", "2"]
        argv += ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg", "-cpu", "max"]
        argv += ["-display", "none", "-monitor", "none", "-no-reboot"]
        # A console socket: wait=on holds the guest until the rig is connected, so no byte is lost.
        console = (
            f"unix:{boot_dir / 'console.sock'},server=on,wait=on"
            if console_socket
            else f"file:{boot_dir / 'console.log'}"
        )
        argv += ["-serial", console, "-serial", f"file:{boot_dir / 'ttyS1.log'}"]
        # cache=unsafe: the guest's flushes are not waited for (speed); a clean poweroff
        # still leaves everything written, since QEMU flushes at exit.
        argv += ["-drive", f"file={self.path},format=raw,if=virtio,cache=unsafe"]
        argv += [
            "-fw_cfg",
            f"name=opt/owvm/name,string={name}",
            "-fw_cfg",
            f"name=opt/owvm/cmd,file={boot_dir / 'cmd.sh'}",
        ]
        if firmware == "ovmf":
            vars_file = self.work / "OVMF_VARS.fd"  # one per image: the EFI variables live across boots
            if not vars_file.exists():
                shutil.copyfile(OVMF_VARS, vars_file)
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"]
            argv += ["-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]
        elif firmware != "bios":
            raise ValueError(f"firmware {firmware!r}: bios or ovmf")
        return argv

    def _run_qemu(
        self,
        name: str,
        boot_dir: Path,
        firmware: str,
        kill_at: tuple[str, float] | None,
        timeout: float,
        console_keys: Sequence[tuple[str, str]] = (),
    ) -> tuple[str, bool]:
        for f in ("console.log", "ttyS1.log"):
            (boot_dir / f).write_text("")
        argv = self._qemu_argv(name, boot_dir, firmware, console_socket=bool(console_keys))
        (boot_dir / "qemu.argv").write_text(" ".join(argv) + "\n")
        (boot_dir / "console.sock").unlink(missing_ok=True)
        with open(boot_dir / "qemu.log", "w") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        kill_deadline: float | None = None
        killed = False
        console: SerialSocket | None = None
        keys = list(console_keys)
        seen = 0  # the console offset past the last pair's TEXT
        try:
            if keys:
                console = SerialSocket(boot_dir / "console.sock", boot_dir / "console.log")
                console.connect(deadline, proc)
            while proc.poll() is None:
                time.sleep(0.1 if keys else 0.5)
                now = time.monotonic()
                while console is not None and keys and (at := console.find(keys[0][0], seen)) >= 0:
                    seen = at
                    console.send_keys(keys.pop(0)[1])
                    with open(boot_dir / "console-keys.log", "a") as typed:
                        typed.write(
                            f"{now - deadline + timeout:.1f} s after start, after {console.buf[at - 60 : at]!r}\n"
                        )
                if kill_at and kill_deadline is None and f"OWVM {kill_at[0]}" in _read(boot_dir / "ttyS1.log"):
                    kill_deadline = now + kill_at[1]
                if kill_deadline is not None and now >= kill_deadline:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                elif now >= deadline or "end Kernel panic" in _read(boot_dir / "console.log"):
                    proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if console is not None:
                console.close()
        if keys and not killed:
            raise BootFailed(f"boot {name!r}: the console never showed {keys[0][0]!r} (keys not typed)")
        return _read(boot_dir / "console.log"), killed


def unwrap(value: Any) -> Any:
    """busctl --json's values with every {"type": SIG, "data": VALUE} variant replaced by its plain VALUE."""
    if isinstance(value, dict):
        if set(value) == {"type", "data"}:
            return unwrap(value["data"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _wait_for(path: str) -> None:
    for _ in range(100):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} never appeared")


def journal_messages(records: list[dict[str, Any]]) -> list[str]:
    """The MESSAGE fields of journal records (bytes arrays decoded)."""
    out = []
    for r in records:
        m = r.get("MESSAGE", "")
        out.append(bytes(m).decode(errors="replace") if isinstance(m, list) else str(m))
    return out


def monotonic_us(units: dict[str, dict[str, str]], unit: str, key: str) -> int:
    """A unit's monotonic timestamp in microseconds (0: never)."""
    return int(units[unit].get(key, "0") or 0)


VERSION_RE = re.compile(r'(?m)^__version__ = "([^"]+)"$')


def package_version() -> str:
    """The version of the checkout under test (ostreewatch/__init__.py)."""
    m = VERSION_RE.search((REPO / "ostreewatch/__init__.py").read_text())
    assert m is not None
    return m.group(1)
