"""Real components for the benchmarks: a private dbus-daemon, an ostreewatchd process, a signal recorder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

from bench.harness import NotifyListener
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")

# A bench-only bus: system type, everything allowed (the bench measures speed, not policy).
_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
  <limit name="max_replies_per_connection">100000</limit>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">100000000</limit>
</busconfig>
"""


class PrivateBus:
    """dbus-daemon of type system on a socket in a temp dir; restartable on the same address."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="owbench-bus-")
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "system_bus_socket")
        self.address = f"unix:path={self.socket}"
        self.conf = os.path.join(self.dir, "bus.conf")
        with open(self.conf, "w") as f:
            f.write(_BUS_CONF.format(sock=self.socket))
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={self.conf}", "--nofork", "--print-pid"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout
        self.proc.stdout.readline()  # the pid: printed once the socket listens
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class DaemonArgs:
    sysroot: str = ""
    mountinfo: str = ""
    cmdline: str = ""
    run: str = ""
    sample: bool = False
    debounce_ms: int | None = None
    extra: Sequence[str] = ()

    def argv(self, bus_address: str) -> list[str]:
        argv = [os.path.join(VENV_BIN, "ostreewatchd"), "--bus", bus_address]
        if self.sample:
            argv.append("--sample")
        for opt in ("sysroot", "mountinfo", "cmdline", "run"):
            value = getattr(self, opt)
            if value:
                argv += [f"--{opt}", value]
        if self.debounce_ms is not None:
            argv += ["--debounce-ms", str(self.debounce_ms)]
        return argv + list(self.extra)


class Daemon:
    """One ostreewatchd process with its own NOTIFY_SOCKET; start() returns seconds from exec to READY=1."""

    def __init__(self, bus_address: str, args: DaemonArgs, log_path: str | None = None) -> None:
        self.bus_address = bus_address
        self.args = args
        self._own_log = log_path is None  # a temp log of our own is removed by stop()
        self.log_path = log_path or os.path.join(tempfile.mkdtemp(prefix="owbench-daemon-"), "daemon.log")
        self.proc: subprocess.Popen | None = None
        self.notify: NotifyListener | None = None

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> float:
        self.notify = NotifyListener()
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the daemon writes to it until stop() closes it
        t0 = time.monotonic()
        argv = self.args.argv(self.bus_address)
        if "--state-dir" not in " ".join(argv):
            # The boot records beside the log, never the machine's /var/lib/ostreewatch.
            argv += ["--state-dir", os.path.join(os.path.dirname(self.log_path), "state")]
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        t_ready = self.notify.wait_for("READY=1", timeout)
        if t_ready is None:
            rc = self.proc.poll()
            self.stop()
            raise RuntimeError(f"ostreewatchd not ready in {timeout}s (exit {rc}); log: {self.log_path}")
        self.notify.drain()
        return t_ready - t0

    def stop(self) -> int | None:
        rc = None
        if self.proc:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            rc = self.proc.returncode
        if self.notify:
            self.notify.close()
            self.notify = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        if self._own_log:
            shutil.rmtree(os.path.dirname(self.log_path), ignore_errors=True)
        return rc


# --- clients ------------------------------------------------------------------------------


async def connect(address: str) -> MessageBus:
    return await MessageBus(bus_address=address).connect()


async def wait_for_name(address: str, timeout: float = 20.0) -> None:
    """Wait until org.ostreewatch1 has an owner (the daemon connects after READY=1 may be sent)."""
    from ostreewatch.client import Client

    client = await Client.connect(address)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await client.has_owner():
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{BUS_NAME} has no owner after {timeout}s")
    finally:
        client.close()


def getall_message() -> Message:
    return Message(
        destination=BUS_NAME,
        path=OBJECT_PATH,
        interface="org.freedesktop.DBus.Properties",
        member="GetAll",
        signature="s",
        body=[INTERFACE],
    )


async def get_all(bus: MessageBus) -> dict[str, Any]:
    reply = await bus.call(getall_message())
    if reply.message_type != MessageType.METHOD_RETURN:
        raise RuntimeError(f"GetAll: {reply.error_name} {reply.body}")
    return {k: v.value for k, v in reply.body[0].items()}


@dataclass
class SignalEvent:
    t: float
    member: str
    changed: frozenset
    generation: int | None


class Recorder:
    """A subscriber: records every signal from the daemon's object with its arrival time."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.events: list[SignalEvent] = []
        self._cond = asyncio.Condition()

    @classmethod
    async def create(cls, address: str) -> Recorder:
        rec = cls(await connect(address))
        reply = await rec.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[f"type='signal',path='{OBJECT_PATH}'"],
            )
        )
        if reply.message_type != MessageType.METHOD_RETURN:
            raise RuntimeError(f"AddMatch: {reply.error_name}")
        rec.bus.add_message_handler(rec._on_message)
        return rec

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.path != OBJECT_PATH:
            return None
        t = time.monotonic()
        changed: frozenset = frozenset()
        gen = None
        if msg.member == "PropertiesChanged" and msg.body and msg.body[0] == INTERFACE:
            changed = frozenset(msg.body[1].keys())
            if "Generation" in msg.body[1]:
                gen = msg.body[1]["Generation"].value
        self.events.append(SignalEvent(t, msg.member, changed, gen))
        asyncio.get_running_loop().create_task(self._notify())
        return None

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait(self, since: int, pred, timeout: float) -> SignalEvent | None:
        """The first event at index >= since that satisfies pred, waiting up to timeout."""

        async def scan() -> SignalEvent | None:
            for ev in self.events[since:]:
                if pred(ev):
                    return ev
            return None

        try:
            async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _Null(), self._cond:
                while True:
                    ev = await scan()
                    if ev:
                        return ev
                    await self._cond.wait()
        except (TimeoutError, asyncio.TimeoutError):
            return await scan()

    async def quiet(self, seconds: float, limit: float = 10.0) -> None:
        """Wait until no signal arrived for `seconds` (the end of one change's burst)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            n = len(self.events)
            await asyncio.sleep(seconds)
            if len(self.events) == n:
                return

    def close(self) -> None:
        self.bus.disconnect()


class _Null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: Any) -> None:
        return None
