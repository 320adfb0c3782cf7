"""Benchmark harness pieces that need no daemon: readiness listener, stats, machine info, inotify clock.

/proc sampling and the mount-namespace worker are shared with the tests: tests/fixtures/measure.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence

from tests.fixtures.measure import status_fields

# --- sd_notify listener ---------------------------------------------------------


class NotifyListener:
    """A NOTIFY_SOCKET datagram socket; records when each message arrived (monotonic)."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="owbench-notify-", dir=directory)
        self.path = os.path.join(self._dir, "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self.messages: list[tuple] = []  # (monotonic time, text)

    def wait_for(self, needle: str, timeout: float) -> float | None:
        """Block until a message holding needle (e.g. READY=1) arrives; its arrival time or None."""
        deadline = time.monotonic() + timeout
        for t, text in self.messages:
            if needle in text.split("\n"):
                return t
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                return None
            t = time.monotonic()
            text = data.decode("utf-8", "replace")
            self.messages.append((t, text))
            if needle in text.split("\n"):
                return t

    def drain(self) -> None:
        """Keep reading in a thread, as systemd does: an unread socket fills after
        net.unix.max_dgram_qlen datagrams and the daemon's next sd_notify blocks."""
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.is_set():
                self._sock.settimeout(0.2)
                try:
                    data = self._sock.recv(65536)
                except (socket.timeout, OSError):
                    continue
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

        self._drainer = threading.Thread(target=run, daemon=True)
        self._drainer.start()

    def close(self) -> None:
        if getattr(self, "_drainer", None):
            self._stop.set()
            self._drainer.join(2)
        self._sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: Iterable[float]) -> dict[str, float]:
    v = list(values)
    return {
        "n": len(v),
        "min": min(v) if v else float("nan"),
        "p10": percentile(v, 10),
        "p50": percentile(v, 50),
        "p90": percentile(v, 90),
        "p99": percentile(v, 99),
        "max": max(v) if v else float("nan"),
    }


# --- machine ----------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = status_fields("/proc/meminfo").get("MemTotal", "?")

    def tool(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    return {
        "cores": str(os.cpu_count()),
        "cpu": model or "?",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "os": _os_release(),
        "ostree": _ostree_version(),
        "dbus-daemon": tool(["dbus-daemon", "--version"]),
        "systemd (bootctl)": tool(["bootctl", "--version"]),
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"


def _ostree_version() -> str:
    try:
        out = subprocess.run(["ostree", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    for line in out.splitlines():
        if "Version" in line:
            return line.split(":", 1)[1].strip().strip("'")
    return "?"


# --- inotify clock: when did a rename land? --------------------------------------------

IN_MOVED_TO = 0x00000080
IN_CLOSE_WRITE = 0x00000008
IN_CREATE = 0x00000100
IN_CLOEXEC = 0o2000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class RenameClock:
    """Records the monotonic time of every IN_MOVED_TO (or MASK) event of a name in one directory (a thread)."""

    def __init__(self, directory: str, names: Sequence[str] | None = None, mask: int = 0) -> None:
        self._fd = _libc.inotify_init1(IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(directory), mask or IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self._names = set(names) if names else None
        self.events: list[tuple] = []  # (monotonic, name)
        self._cond = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = poller.poll()
            t = time.monotonic()
            if any(fd == self._stop_r for fd, _ in ready):
                return
            buf = os.read(self._fd, 65536)
            off = 0
            while off < len(buf):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, off)
                name = buf[off + 16 : off + 16 + length].rstrip(b"\0").decode("utf-8", "replace")
                off += 16 + length
                if self._names is None or name in self._names:
                    with self._cond:
                        self.events.append((t, name))
                        self._cond.notify_all()

    def wait_after(self, count_before: int, timeout: float) -> float | None:
        """Time of the first event recorded after count_before events, waiting up to timeout."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) > count_before, timeout)
            if len(self.events) > count_before:
                return self.events[count_before][0]
        return None

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
