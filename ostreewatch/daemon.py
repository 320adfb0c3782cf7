"""ostreewatchd: watcher -> debounce -> snapshot -> diff -> D-Bus signals and journal.

The daemon is ready (sd_notify READY=1) as soon as its first snapshot is read
and journaled; the bus is joined whenever its socket appears (an inotify watch
on the socket's directory, no retry loop), and joined again after it goes away.
Nothing here wakes up while nothing changes: a timer runs only after an event
(the debounce) or when systemd asks for watchdog pings.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import signal
import socket
import sys
import threading
import time
import types
from typing import TYPE_CHECKING, Any

# What the first snapshot needs is imported here, before the event loop runs (an import inside
# a callback would hold the loop). The D-Bus side (dbus_next, the service, the boot writer) is
# not needed before READY=1 and is imported after it, in a thread (_load_bus_side): every
# millisecond before READY=1 is one of every boot, since the unit orders before local-fs.target.
from . import __version__, boottracker, changes, errors, layout, model, runfiles, state, textfile
from .journal import LOG_NOTICE, LOG_WARNING, Journal
from .parse.busaddress import parse_address
from .watcher import PathWaiter, Watcher

if TYPE_CHECKING:
    from .bootwrite import BootWriter

log = logging.getLogger("ostreewatch.daemon")

# The quiet time before a rescan. One `ostree admin deploy` is a burst of ~108 inotify
# events over ~84 ms with gaps up to 21 ms at p99 (bench/bench_daemon.py burst), but ostree
# holds its sysroot lock for the whole operation and the daemon waits for the lock's release
# (below): so the debounce only has to fold the few events of a hand edit or a rename, and a
# single-file change is published in ~15 ms (BENCHMARKS.md).
DEFAULT_DEBOUNCE_MS = 10
# ostree's sysroot lock held (a deployment in progress) defers a rescan until its release,
# seen as IN_CLOSE_WRITE of ostree/lock, or at the latest this long: a transaction that
# holds the lock for minutes (rpm-ostree) still gets its changes published.
LOCK_WAIT_MAX = 2.0
# A burst that never goes quiet is still published after this many debounce periods.
MAX_DEBOUNCE_FACTOR = 10


# --- small platform helpers ------------------------------------------------------------


def _notify_address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or addr[0] not in "/@":
        return None
    return "\0" + addr[1:] if addr[0] == "@" else addr


def _send_blocking(addr: str, data: bytes) -> None:
    """From a thread: wait (bounded) for room in a slow reader's queue."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(30)
            s.sendto(data, addr)
    except OSError as e:
        log.warning("sd_notify %r failed: %s", data[:40], e)


def sd_notify(message: str) -> bool:
    """Send MESSAGE ("READY=1", ...) to NOTIFY_SOCKET without ever blocking the event loop.

    libsystemd's sd_notify (systemd.daemon.notify) sends blocking: a reader whose queue is full
    (net.unix.max_dgram_qlen datagrams) would stall the loop. Here the send is non-blocking; on a
    full queue READY=1/STOPPING=1 are handed to a thread, STATUS=/WATCHDOG=1 are dropped (the
    next one carries the news). False when there is no NOTIFY_SOCKET.
    """
    addr = _notify_address()
    if addr is None:
        return False
    data = message.encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
            s.sendto(data, addr)
        return True
    except BlockingIOError:
        if "READY=1" in message or "STOPPING=1" in message:
            threading.Thread(target=_send_blocking, args=(addr, data), daemon=True).start()
            return True
        log.debug("sd_notify queue full; dropped %r", message)
        return False
    except OSError as e:
        log.debug("sd_notify failed: %s", e)
        return False


def status_line(snapshot: model.Snapshot) -> str:
    """One line for systemctl status: booted deployment, default entry, problem count."""
    booted = snapshot.BootedDeployment or "none"
    default = snapshot.DefaultEntry or "none"
    return f"booted {booted}, default entry {default}, {len(snapshot.Problems)} problem(s)"


# --- the daemon ------------------------------------------------------------------------


class Daemon:
    """Holds the published snapshot and its generation; runs the change flow."""

    def __init__(
        self,
        paths: model.Paths,
        bus_spec: str,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        journal: Journal | None = None,
        textfile_dir: str | None = None,
        runtime_dir: str | None = None,
        boots: boottracker.BootTracker | None = None,
    ) -> None:
        self.paths = paths
        self.boots = boots
        self.textfile_dir = textfile_dir
        self.runtime_dir = runtime_dir or None
        self.bus_spec = bus_spec
        self.debounce = max(0, debounce_ms) / 1000.0
        self.journal = journal if journal is not None else Journal()
        self.snapshot = model.Snapshot()
        self.generation = 0
        self.manager: Any = None
        self.writer: BootWriter | None = None
        self.watcher: Watcher | None = None
        self.bus: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan")
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._debounce_handle: asyncio.TimerHandle | None = None
        self._burst_start = 0.0
        self._want = 0
        self._done = 0
        self._scan_task: asyncio.Future[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._tasks: list[asyncio.Future[None]] = []
        self._ready = False  # the first snapshot is read and published
        self._pending = False  # a change was seen during the first read
        self._only_mounts = True  # every change since the last read came from the mount table
        self._locked_since: float | None = None  # when a rescan was first deferred for ostree's lock
        self._mount_fingerprint: tuple[tuple[model.Mount, ...], int] | None = None
        self._textfile_executor: concurrent.futures.ThreadPoolExecutor | None = None
        # One worker: the runtime files are written in publication order, never on the loop.
        self._runfiles_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="runfiles")
        self._runtime_dir_ok = False
        self._bridge: Any = None  # rebootentry.Bridge, once the bus side is loaded (it imports bootwrite)
        self._boot_complete: bool | None = None  # boot-complete.target reached, as systemd says; None: unknown

    # -- scanning --

    def _read(self, only_mounts: bool = False) -> model.Snapshot | None:
        """A new snapshot; None when only the mount table woke us and nothing published of it changed.

        Under a mount storm (thousands of unrelated mounts coming and going) this keeps
        each wakeup to one parse of the watched mountinfo lines, with no sysroot read.
        Runs in the executor thread, the only one that touches _mount_fingerprint.
        """
        fingerprint = state.mount_fingerprint(self.paths)
        if only_mounts and fingerprint is not None and fingerprint == self._mount_fingerprint:
            return None
        snapshot = state.read_snapshot(self.paths)
        if self.boots is not None:
            snapshot = self.boots.decorate(snapshot, self._boot_complete)
        else:
            snapshot = boottracker.with_assessment(
                snapshot, sysroot=self.paths.sysroot, boot_complete=self._boot_complete
            )
        # Taken before the read: a mount change racing the read makes the next wakeup read again.
        self._mount_fingerprint = fingerprint
        return snapshot

    def on_change(self, reason: str = "") -> None:
        """The watcher's callback: rescan after a quiet time (trailing debounce, capped)."""
        loop = self._loop
        if loop is None or self._stopping is None or self._stopping.is_set():
            return
        if not self._ready:  # during the first read: one more read right after it
            self._pending = True
            return
        if reason != "mounts":
            self._only_mounts = False
        now = loop.time()
        if self._debounce_handle is None:
            self._burst_start = now
        else:
            self._debounce_handle.cancel()
        due = min(now + self.debounce, self._burst_start + self.debounce * MAX_DEBOUNCE_FACTOR)
        if reason == "lock-released":
            # ostree closes its lock file when its whole operation, cleanup included, is done:
            # nothing more of it is coming, so the quiet time would only add latency.
            due = now
        self._debounce_handle = loop.call_at(due, self._debounced)

    def _on_sighup(self) -> None:
        if self._ready:
            self.request_scan()
        else:
            self._pending = True

    def _debounced(self) -> None:
        self._debounce_handle = None
        loop = self._loop
        assert loop is not None
        # A sysroot half-written by ostree would be published as transient problems (a new
        # deployment without its entry, the old loader.N): wait for ostree to finish.
        if not self._only_mounts and layout.sysroot_locked(self.paths.sysroot):
            now = loop.time()
            if self._locked_since is None:
                self._locked_since = now
            if now - self._locked_since < LOCK_WAIT_MAX:
                self._debounce_handle = loop.call_at(self._locked_since + LOCK_WAIT_MAX, self._debounced)
                return
        self._locked_since = None
        self.request_scan(full=False)

    def request_scan(self, full: bool = True) -> int:
        """Ask for a rescan; returns a ticket that wait_scan() waits for."""
        if full:
            self._only_mounts = False
        self._want += 1
        if self._scan_task is None:
            self._scan_task = asyncio.ensure_future(self._scan_loop())
        return self._want

    async def wait_scan(self, ticket: int) -> None:
        if self._done >= ticket:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, fut))
        await fut

    async def _scan_loop(self) -> None:
        """One read at a time; requests arriving during a read cause exactly one more."""
        loop = asyncio.get_running_loop()
        try:
            while self._done < self._want:
                target = self._want
                only_mounts, self._only_mounts = self._only_mounts, True
                try:
                    new = await loop.run_in_executor(self._executor, self._read, only_mounts)
                except Exception:
                    log.exception("reading the boot state failed; keeping the published one")
                else:
                    if new is not None:
                        try:
                            diff = changes.diff(self.snapshot, new)
                            if not diff.empty:
                                # status.json first: whoever hears the D-Bus signal finds the file as new.
                                await self._write_runfiles(new, self.generation + 1)
                            elif self._bridge is not None:
                                # grub.cfg is not in the snapshot: a new config (bootupd's static one)
                                # changes what logind is told without a published change.
                                self._runfiles_executor.submit(self._sync_bridge, new)
                            self._apply(new, diff)
                        except Exception:  # noqa: BLE001 - a publishing bug must not stall Reload's waiters
                            log.exception("publishing the new boot state failed")
                self._done = target
                still = []
                for ticket, fut in self._waiters:
                    if ticket <= target:
                        if not fut.done():
                            fut.set_result(None)
                    else:
                        still.append((ticket, fut))
                self._waiters = still
        finally:
            self._scan_task = None

    def _apply(self, new: model.Snapshot, diff: changes.Changes | None = None) -> None:
        old = self.snapshot
        if diff is None:
            diff = changes.diff(old, new)
        if diff.empty:
            return
        self.generation += 1
        self.snapshot = new
        if self.manager is not None:
            self.manager.publish(new, self.generation, diff)
        self.journal.changed(old, new, diff, self.generation)
        self._export_textfile()
        self._expect(new)
        for problem in diff.problems_appeared:
            self.journal.problem_appeared(problem)
        for problem in diff.problems_cleared:
            self.journal.problem_cleared(problem)
        sd_notify("STATUS=" + status_line(new))

    # -- the runtime directory: status.json (docs/logind.md) --

    async def _write_runfiles(self, snapshot: model.Snapshot, generation: int) -> None:
        """Write the runtime files for SNAPSHOT in their thread; the loop only awaits."""
        if self.runtime_dir is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._runfiles_executor, self._write_runfiles_sync, snapshot, generation)

    def _write_runfiles_sync(self, snapshot: model.Snapshot, generation: int) -> None:
        directory = self.runtime_dir
        assert directory is not None
        try:
            if not self._runtime_dir_ok:
                runfiles.ensure_dir(directory)
                self._runtime_dir_ok = True
            runfiles.write_status(directory, snapshot, generation, __version__)
        except OSError as e:
            # D-Bus publication goes on: a missing status file is not a reason to stop.
            self._runtime_dir_ok = False
            self.journal.log(
                LOG_WARNING, f"cannot write {runfiles.STATUS_FILE} in {directory}: {e}", runtime_dir=directory
            )
            return
        self._sync_bridge(snapshot)

    def _sync_bridge(self, snapshot: model.Snapshot) -> None:
        """The logind bridge's files (ostreewatch/rebootentry.py); in the runfiles thread."""
        if self._bridge is None:
            return
        try:
            self._bridge.sync(snapshot)
        except (OSError, errors.OstreewatchError) as e:
            self.journal.log(
                LOG_WARNING,
                f"cannot write the logind bridge's files in {self.runtime_dir}: {e}",
                runtime_dir=self.runtime_dir,
            )

    def _remove_runfiles(self) -> None:
        """At a clean stop: no stale state for readers (systemd removes RuntimeDirectory= too)."""
        self._runfiles_executor.shutdown(wait=True)
        if self.runtime_dir is None:
            return
        try:
            runfiles.remove(self.runtime_dir, runfiles.STATUS_FILE)
            if self._bridge is not None:
                self._bridge.clear()
        except OSError as e:
            log.warning("cannot remove %s in %s: %s", runfiles.STATUS_FILE, self.runtime_dir, e)

    # -- boot records (docs/boot-outcome.md) --

    def _begin_boots(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write this boot's record (judged with the first snapshot) in the records thread, then journal it."""
        boots = self.boots
        if boots is None:
            return

        def done(fut: concurrent.futures.Future[Any]) -> None:
            loop.call_soon_threadsafe(self._boots_judged, fut)

        boots.submit(boots.persist, self.snapshot).add_done_callback(done)

    def _boots_judged(self, fut: concurrent.futures.Future[Any]) -> None:
        try:
            record, new = fut.result()
        except Exception:  # noqa: BLE001 - a bug in the records must not stop the daemon
            log.exception("judging this boot failed")
            return
        if record is not None and new:
            self.journal.boot_outcome(record)
        if self._stopping is not None and not self._stopping.is_set():
            self.request_scan()  # a failed write is a problem to publish; otherwise nothing changes

    def _expect(self, snapshot: model.Snapshot) -> None:
        """Write down what the boot loader will boot next, in the records thread (never on the loop)."""
        boots, loop = self.boots, self._loop
        if boots is None or loop is None:
            return

        def done(fut: concurrent.futures.Future[Any]) -> None:
            if fut.exception() is None and fut.result():
                loop.call_soon_threadsafe(self._records_changed)
            elif fut.exception() is not None:
                log.error("writing the boot expectation failed: %s", fut.exception())

        boots.submit(boots.expect, snapshot).add_done_callback(done)

    def _records_changed(self) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            self.request_scan()

    # -- node_exporter textfile (docs/fleet.md) --

    def _export_textfile(self) -> None:
        """Hand the published snapshot to the textfile thread; never a disk write on the loop."""
        if self.textfile_dir is None:
            return
        if self._textfile_executor is None:
            self._textfile_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="textfile"
            )
        # One worker: writes land in publication order, the last one wins.
        self._textfile_executor.submit(
            self._write_textfile, self.textfile_dir, self.snapshot, self.generation, time.time()
        )

    def _write_textfile(self, directory: str, snapshot: model.Snapshot, generation: int, when: float) -> None:
        try:
            textfile.write_textfile(directory, textfile.render(snapshot, generation, when))
        except (OSError, ValueError) as e:
            self.journal.log(
                LOG_WARNING, f"cannot write the node_exporter textfile in {directory}: {e}", textfile_dir=directory
            )

    def _remove_textfile(self) -> None:
        """At a clean stop: the metrics go absent, so the fleet sees the daemon is down."""
        if self.textfile_dir is None:
            return
        if self._textfile_executor is not None:
            self._textfile_executor.shutdown(wait=True)
        try:
            textfile.remove_textfile(self.textfile_dir)
        except OSError as e:
            log.warning("cannot remove the textfile in %s: %s", self.textfile_dir, e)

    async def reload(self) -> int:
        """Reload(): rescan now (pending debounce included) and return the Generation after it."""
        if self._debounce_handle is not None:
            self._debounce_handle.cancel()
            self._debounce_handle = None
        await self.wait_scan(self.request_scan())
        return self.generation

    def _writer(self) -> BootWriter:
        """The boot writer: made with the Manager, before the bus loop, so before any call."""
        assert self.writer is not None
        return self.writer

    async def set_entry(self, which: str, entry_id: str, caller: model.Caller, ask: Any = None) -> None:
        await self._writer().set_entry(which, entry_id, caller, self.snapshot, ask)

    async def set_deployment(self, deployment_id: str, caller: model.Caller, ask: Any = None) -> str:
        return await self._writer().set_deployment(deployment_id, caller, self.snapshot, ask)

    async def authorized_reload(self, caller: model.Caller, ask: Any = None) -> int:
        """Reload() over the bus: the writer's authorization (uid 0 or polkit), then a rescan."""
        return await self._writer().reload(caller, ask, self.reload, self.snapshot)

    async def _refreshed(self) -> model.Snapshot:
        """The snapshot after a write, published (the writer answers from it)."""
        await self.reload()
        return self.snapshot

    # -- bus --

    def bus_address(self) -> str:
        """The address --bus resolves to, so the log names the socket (`system` alone does not)."""
        if self.bus_spec not in ("system", "session"):
            return self.bus_spec
        var = "DBUS_SYSTEM_BUS_ADDRESS" if self.bus_spec == "system" else "DBUS_SESSION_BUS_ADDRESS"
        default = "unix:path=/var/run/dbus/system_bus_socket" if self.bus_spec == "system" else "(unset)"
        return os.environ.get(var) or default

    async def _bus_loop(self) -> None:
        from . import service  # loaded by run() before this task starts

        path = service.socket_path(self.bus_spec)
        backoff = 0.5
        said_missing = False
        while True:
            waiter = None
            if path:
                try:
                    waiter = PathWaiter(path)
                except OSError as e:
                    log.warning("cannot watch %s for the bus socket: %s", path, e)
            try:
                bus = await self._connect_retrying(service)
            except Exception as e:  # noqa: BLE001 - any failure to connect: wait for the socket, retry
                if not said_missing:
                    kind = f"{self.bus_spec} " if self.bus_spec in ("system", "session") else ""
                    self.journal.log(
                        LOG_NOTICE,
                        f"waiting for the D-Bus {kind}bus at {self.bus_address()} ({e}); watching state meanwhile",
                        bus=self.bus_spec,
                    )
                    said_missing = True
                if waiter is not None:
                    await waiter.wait()
                    waiter.close()
                else:  # no socket file to watch (abstract or tcp address): back off
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                continue
            finally:
                if waiter is not None:
                    waiter.close()
            said_missing, backoff = False, 0.5
            self.bus = bus
            self.manager.attach(bus)
            try:
                owner = await service.own_name(bus)
            except Exception as e:  # noqa: BLE001 - the daemon keeps serving without the name
                owner = False
                log.warning("RequestName failed: %s", e)
            self._tasks.append(asyncio.ensure_future(self._watch_boot_complete(service, bus)))
            if owner:
                self.journal.bus_connected(self.bus_address(), bus.unique_name or "")
            else:
                self.journal.log(
                    LOG_WARNING, f"{service.BUS_NAME} is owned by another connection; queued for it", bus=self.bus_spec
                )
            reason = "disconnected"
            try:
                await bus.wait_for_disconnect()
            except Exception as e:  # noqa: BLE001 - whatever ended the connection, reconnect
                reason = str(e) or type(e).__name__
            self.manager.detach(bus)
            service.close_bus(bus)  # else the daemon keeps the old connection, and our name with it
            self.bus = None
            self.journal.bus_lost(self.bus_spec, reason)

    async def _watch_boot_complete(self, service: Any, bus: Any) -> None:
        """BootAssessment's boot_complete: boot-complete.target's state, from systemd on this bus."""

        def on_state(active_state: str) -> None:
            complete = active_state == "active"
            if complete != self._boot_complete:
                self._boot_complete = complete
                if self._stopping is not None and not self._stopping.is_set():
                    self.request_scan()

        try:
            await service.watch_unit_active(bus, "boot-complete.target", on_state)
        except (errors.OstreewatchError, asyncio.TimeoutError, OSError) as e:
            # No systemd on this bus (a test's private bus): boot_complete stays unknown.
            log.debug("boot-complete.target cannot be watched: %s", e)

    async def _connect_retrying(self, service: Any) -> Any:
        """Connect; a socket just created may not be listening yet, so retry a few times."""
        for attempt in range(5):
            try:
                return await service.connect(self.bus_spec)
            except ConnectionRefusedError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    # -- life cycle --

    async def run(self) -> int:
        self._loop = loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        # Watch before the first read, so that a change made during it is not lost.
        self._start_watcher(loop)
        first = await loop.run_in_executor(self._executor, self._read)
        assert first is not None  # only a read for the mount table alone returns None
        self.snapshot = first
        self.generation = 1
        self.journal.started(self.snapshot, __version__)
        # Before READY=1: a unit ordered after ours finds status.json there.
        await self._write_runfiles(self.snapshot, self.generation)
        self._export_textfile()
        for problem in self.snapshot.Problems:
            self.journal.problem_appeared(problem)
        self._begin_boots(loop)
        self._ready = True
        sd_notify("READY=1\nSTATUS=" + status_line(self.snapshot))
        if self.watcher is not None and self.watcher.mount_probe_note:
            log.info("%s", self.watcher.mount_probe_note)
        if self._pending:
            self._pending = False
            self.request_scan()
        service, bootwrite, rebootentry = await loop.run_in_executor(None, _load_bus_side)
        if self.runtime_dir is not None:
            self._bridge = rebootentry.Bridge(self.paths, self.runtime_dir)
            # After the status file of the first snapshot (one worker: in order); changes follow.
            self._runfiles_executor.submit(self._sync_bridge, self.snapshot)
        # Built from the snapshot of now: a change published in between is already in it.
        self.manager = service.Manager(
            self.snapshot,
            self.generation,
            __version__,
            reload=self.authorized_reload,
            set_entry=self.set_entry,
            set_deployment=self.set_deployment,
        )
        self.writer = bootwrite.BootWriter(
            self.paths,
            self.journal,
            refresh=self._refreshed,
            efivars=os.environ.get("OSTREEWATCH_EFIVARS", bootwrite.EFIVARS),
            deploy_python=os.environ.get("OSTREEWATCH_DEPLOY_PYTHON", bootwrite.DEPLOY_PYTHON),
        )
        self._start_watchdog(loop)
        self._tasks.append(asyncio.ensure_future(self._bus_loop()))
        await self._stopping.wait()
        sd_notify("STOPPING=1")
        await self._shutdown()
        return 0

    def _start_watcher(self, loop: asyncio.AbstractEventLoop) -> None:
        self.watcher = Watcher(self.paths, self.on_change, loop)
        self.watcher.start()

    def _start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return
        try:
            interval = int(usec) / 2e6
        except ValueError:
            return
        if interval <= 0:
            return

        def ping() -> None:
            sd_notify("WATCHDOG=1")
            loop.call_later(interval, ping)

        ping()

    async def _shutdown(self) -> None:
        self.journal.stopping()
        if self.watcher is not None:
            try:
                self.watcher.stop()
            except Exception:
                log.exception("stopping the watcher failed")
        if self._debounce_handle is not None:
            self._debounce_handle.cancel()
        if self._scan_task is not None:
            self._tasks.append(self._scan_task)
        if self.manager is not None:
            self._tasks.extend(self.manager._tasks)
        for task in self._tasks:
            task.cancel()
        if self.bus is not None:
            from . import service  # a bus means the service was loaded

            service.close_bus(self.bus)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self._remove_textfile)
        await asyncio.get_running_loop().run_in_executor(None, self._remove_runfiles)
        if self.boots is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.boots.close)


# --- command line ----------------------------------------------------------------------


def _load_bus_side() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """The service (dbus_next), boot writer and logind bridge modules, imported after READY=1 (in a thread)."""
    from . import bootwrite, rebootentry, service

    return service, bootwrite, rebootentry


def check_bus_spec(spec: str) -> None:
    """Raise InvalidArgs for a --bus value that is neither system, session nor a D-Bus address."""
    if spec in ("system", "session"):
        return
    try:
        parse_address(spec)
    except errors.BusAddressError as e:
        raise errors.InvalidArgs(f"--bus {spec!r}: not system, session or a D-Bus address ({e})") from None


def build_parser() -> argparse.ArgumentParser:
    from .sample import DEFAULT, NAMES
    from .sample import add_argument as add_sample_argument

    p = argparse.ArgumentParser(prog="ostreewatchd", description="Publish an OSTree host's boot state on D-Bus.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--bus", default="system", metavar="BUS", help="system, session or a D-Bus address (default: system)"
    )
    p.add_argument("--sysroot", default="/", metavar="DIR", help="the sysroot to watch (default: /)")
    p.add_argument(
        "--mountinfo", default="/proc/1/mountinfo", metavar="FILE", help="mount table (default: /proc/1/mountinfo)"
    )
    p.add_argument(
        "--cmdline", default="/proc/cmdline", metavar="FILE", help="kernel command line (default: /proc/cmdline)"
    )
    p.add_argument("--run", default="/run", metavar="DIR", help="the run directory (default: /run)")
    p.add_argument(
        "--debounce-ms",
        type=int,
        default=DEFAULT_DEBOUNCE_MS,
        metavar="MS",
        help=f"quiet time before a rescan (default: {DEFAULT_DEBOUNCE_MS})",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe stderr log message shown (default: info; journal records are not affected)",
    )
    add_sample_argument(
        p, f"watch a bundled sample host instead, in a temp dir removed at exit ({', '.join(NAMES)}; default {DEFAULT})"
    )
    p.add_argument(
        "--textfile-dir",
        default=None,
        metavar="DIR",
        help="write DIR/ostreewatch.prom for node_exporter's textfile collector at start "
        "and at every published change (default: off)",
    )
    p.add_argument(
        "--runtime-dir",
        default=os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None,
        metavar="DIR",
        help="keep DIR/status.json (what `ostreewatch status --json` prints) at start and at every published "
        "change (default: $RUNTIME_DIRECTORY, which RuntimeDirectory=ostreewatch in the unit sets to "
        f"{runfiles.DEFAULT_RUNTIME_DIR}; off without it)",
    )
    once = p.add_mutually_exclusive_group()
    once.add_argument(
        "--prepare-logind",
        action="store_true",
        help="write RUNTIME_DIR/logind.env and link RUN/boot-loader-entries for systemd-logind, then exit "
        "(ExecStart= of ostreewatch-reboot-entry.service; docs/logind.md)",
    )
    once.add_argument(
        "--apply-reboot-entry",
        action="store_true",
        help="make the entry systemd-logind wrote to RUN/systemd/reboot-to-boot-loader-entry the next boot's, "
        "as SetNextEntry does, then exit (ExecStop= of ostreewatch-reboot-entry.service; docs/logind.md)",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the boot records are kept (default: $STATE_DIRECTORY, which the unit's StateDirectory= "
        'sets, else /var/lib/ostreewatch; "" keeps none)',
    )
    p.add_argument(
        "--boot-id-file",
        default="/proc/sys/kernel/random/boot_id",
        metavar="FILE",
        help="this boot's id (default: /proc/sys/kernel/random/boot_id)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _paths(args: argparse.Namespace) -> model.Paths:
    if args.sample:
        return _sample_paths(args.sample)
    return model.Paths(sysroot=args.sysroot, mountinfo=args.mountinfo, cmdline=args.cmdline, run=args.run)


def _sample_paths(name: str) -> model.Paths:
    """The bundled sample's Paths (materialized in a temp dir removed at exit)."""
    from . import sample

    return sample.paths_for(name)


def _boots(args: argparse.Namespace, paths: model.Paths) -> boottracker.BootTracker | None:
    """The boot records keeper (docs/boot-outcome.md); None with --state-dir "" or a sample host."""
    state_dir = args.state_dir
    if state_dir is None:
        if args.sample:
            return None  # a sample is not this machine's boot: keep no records unless asked
        state_dir = (os.environ.get("STATE_DIRECTORY") or "").split(":")[0] or "/var/lib/ostreewatch"
    if not state_dir:
        return None
    return boottracker.BootTracker(state_dir, args.boot_id_file, paths.sysroot)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="ostreewatchd: %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _setup_logging(args.log_level)
    try:
        check_bus_spec(args.bus)
        paths = _paths(args)
        daemon = Daemon(
            paths,
            args.bus,
            args.debounce_ms,
            textfile_dir=args.textfile_dir,
            runtime_dir=args.runtime_dir,
            boots=_boots(args, paths),
        )
    except (errors.OstreewatchError, ImportError, OSError) as e:
        print(f"ostreewatchd: {e}", file=sys.stderr)
        return 1
    if args.prepare_logind or args.apply_reboot_entry:
        return _logind_step(args, paths)
    debug = os.environ.get("OSTREEWATCH_ASYNCIO_DEBUG") == "1"
    loop = asyncio.new_event_loop()
    if debug:
        # A test sets this: any callback holding the loop for 100 ms is reported on stderr.
        loop.set_debug(True)
        loop.slow_callback_duration = 0.1
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    try:
        return loop.run_until_complete(daemon.run())
    except errors.OstreewatchError as e:
        print(f"ostreewatchd: {e}", file=sys.stderr)
        return 1
    finally:
        loop.close()


def _logind_step(args: argparse.Namespace, paths: model.Paths) -> int:
    """--prepare-logind / --apply-reboot-entry: one step of the logind bridge, then exit."""
    from . import bootwrite, rebootentry

    runtime_dir = args.runtime_dir or runfiles.DEFAULT_RUNTIME_DIR
    try:
        if args.prepare_logind:
            said = rebootentry.prepare_logind(paths, runtime_dir)
        else:
            efivars = os.environ.get("OSTREEWATCH_EFIVARS", bootwrite.EFIVARS)
            said = asyncio.run(rebootentry.apply_request(paths, Journal(), efivars))
    except (errors.OstreewatchError, OSError) as e:
        print(f"ostreewatchd: {e}", file=sys.stderr)
        return 1
    print(f"ostreewatchd: {said}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
