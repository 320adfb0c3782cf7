"""ostreewatchd: watcher -> debounce -> snapshot -> diff -> D-Bus signals and journal.

The daemon is ready (sd_notify READY=1) as soon as its first snapshot is read
and journaled; the bus is joined whenever its socket appears (an inotify watch
on the socket's directory, no retry loop), and joined again after it goes away.
Nothing here wakes up while nothing changes: a timer runs only after an event
(the debounce) or when systemd asks for watchdog pings.
"""

from __future__ import annotations

import os
import sys

from . import __version__, _notify, errors, layout, model, runfiles, state

# Only what the first snapshot needs is imported before READY=1 (the section "before READY=1"
# below): the units that wait for the first read (units/ostreewatch.service) and the CPU the
# rest of the boot shares make every millisecond here one of every boot. The event loop's side
# (asyncio, logging, the watcher's pyinotify, the journal's systemd.journal, threads) is imported
# right after READY=1 by _load_runtime(), and the D-Bus
# side (dbus_next, the service, the boot writer) after that, in a thread (_load_bus_side).
# tests/test_daemon_start.py pins the set of modules imported before READY=1.
# `typing` itself is an import to avoid: mypy treats any TYPE_CHECKING name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    import asyncio
    import concurrent.futures
    import logging
    import signal
    import threading
    import time
    import types
    from collections.abc import Awaitable, Callable, Mapping
    from typing import Any, TypeVar

    from . import authz, busnames, changes, textfile
    from .boottracker import BootTracker
    from .bootwrite import BootWriter
    from .journal import LOG_INFO, LOG_NOTICE, LOG_WARNING, Journal
    from .watcher import PathWaiter, Watcher

    T = TypeVar("T")


class _Log:
    """The module's logger, looked up when used: `logging` is imported after READY=1."""

    def __getattr__(self, name: str) -> object:
        import logging  # a no-op once _load_runtime() ran; before it, only a message that must be said pays

        return getattr(logging.getLogger("ostreewatch.daemon"), name)


log: logging.Logger = _Log()  # type: ignore[assignment]

# The quiet time before a rescan. ostree holds its sysroot lock for a whole deployment (a long
# burst of events) and the daemon waits for the lock's release (below): so the debounce only has
# to fold the few events of a hand edit or a rename (docs/design-notes.md has the figures).
DEFAULT_DEBOUNCE_MS = 10
# While ostree's sysroot lock is held (a deploy, a finalize-staged at shutdown), what a read
# finds is half-written: a new deployment without its entry, the old loader.N beside the new
# one. Such a read is held back until the lock's release (the watcher sees ostree unlink
# ostree/lock), rechecked every LOCK_RECHECK seconds in case that event is missed; after
# OSTREEWATCH_LOCK_WAIT_MAX seconds (LOCK_WAIT_MAX by default) it is published anyway, with
# problem sysroot-lock-held. A deploy under TCG emulation holds the lock for 10 s and more;
# rpm-ostree transactions can hold it for minutes.
LOCK_WAIT_MAX = 300.0
LOCK_WAIT_MAX_ENV = "OSTREEWATCH_LOCK_WAIT_MAX"
LOCK_RECHECK = 5.0
# How long `systemctl is-system-running` may take to say whether the system is stopping.
SYSTEM_STATE_TIMEOUT = 5.0
# A burst that never goes quiet is still published after this many debounce periods.
MAX_DEBOUNCE_FACTOR = 10
# The read at stop (Daemon._read_before_stop) gives up after this many seconds: systemd's
# stop timeout is 90 s by default, and a read takes milliseconds on a host.
STOP_READ_MAX = 5.0


# --- small platform helpers ------------------------------------------------------------


def _send_blocking(addr: str, data: bytes) -> None:
    """From a thread: wait (bounded) for room in a slow reader's queue."""
    try:
        _notify.send(addr, data, blocking=True)
    except OSError as e:
        log.warning("sd_notify %r failed: %s", data[:40], e)


def sd_notify(message: str) -> bool:
    """Send MESSAGE ("READY=1", ...) to NOTIFY_SOCKET without ever blocking the event loop.

    libsystemd's sd_notify (systemd.daemon.notify) sends blocking: a reader whose queue is full
    (net.unix.max_dgram_qlen datagrams) would stall the loop. Here the send is non-blocking; on a
    full queue READY=1/STOPPING=1 are handed to a thread, STATUS=/WATCHDOG=1 are dropped (the
    next one carries the news). False when there is no NOTIFY_SOCKET.
    """
    addr = _notify.address()
    if addr is None:
        return False
    data = message.encode()
    try:
        _notify.send(addr, data, blocking=False)
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


def lock_wait_max(environ: Mapping[str, str] | None = None) -> float:
    """OSTREEWATCH_LOCK_WAIT_MAX as seconds (>= 0); LOCK_WAIT_MAX when unset or not a number."""
    value = (os.environ if environ is None else environ).get(LOCK_WAIT_MAX_ENV, "")
    if not value:
        return LOCK_WAIT_MAX
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):  # also NaN
        log.warning("%s=%r is not a number of seconds; using %g", LOCK_WAIT_MAX_ENV, value, LOCK_WAIT_MAX)
        return LOCK_WAIT_MAX
    return seconds


async def system_stopping() -> bool:
    """Whether systemd says the system is shutting down (`systemctl is-system-running`: stopping).

    Run as a subprocess with a timeout, so the event loop never waits on it; any failure
    (no systemd, no systemctl) is False.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            "systemctl",
            "is-system-running",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SYSTEM_STATE_TIMEOUT)
    except asyncio.TimeoutError:
        return False
    finally:
        if proc.returncode is None:
            proc.kill()
            # Reaped even when the caller is cancelled (a stop while asking): a child left to a
            # closed loop is a warning from asyncio in the journal at every such shutdown.
            await asyncio.shield(proc.wait())
    return out.strip() == b"stopping"


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
        boots: BootTracker | None = None,
    ) -> None:
        _load_runtime()
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
        self._ready_sent = False  # main() sent READY=1 before the loop
        self._first_runfiles_error: str | None = None  # main()'s status.json write before READY=1 failed
        self._pending = False  # a change was seen during the first read
        self._only_mounts = True  # every change since the last read came from the mount table
        self.lock_wait_max = lock_wait_max()
        self._held_since: float | None = None  # when a read was first held back for ostree's lock
        self._recheck_handle: asyncio.TimerHandle | None = None  # the recheck while the lock is held
        self._mount_fingerprint: tuple[tuple[model.Mount, ...], int] | None = None
        self._textfile_executor: concurrent.futures.ThreadPoolExecutor | None = None
        # One worker: the runtime files are written in publication order, never on the loop.
        self._runfiles_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="runfiles")
        self._runtime_dir_ok = False
        self._bridge: Any = None  # rebootentry.Bridge, once the bus side is loaded (it imports bootwrite)
        self._boot_complete: bool | None = None  # boot-complete.target reached, as systemd says; None: unknown

    # -- scanning --

    def _read(self, only_mounts: bool = False, read_locked: bool = True) -> tuple[model.Snapshot | None, bool]:
        """A new snapshot and whether ostree's sysroot lock was held around the read.

        The snapshot is None when only the mount table woke us and nothing published of it
        changed: under a mount storm (thousands of unrelated mounts coming and going) this
        keeps each wakeup to one parse of the watched mountinfo lines, with no sysroot read.
        The lock is probed before and after the read: held at either end, ostree may have
        been writing during it. Held before it and not READ_LOCKED: no read at all (None,
        True), so a long ostree operation costs no reads. Runs in the executor thread, the
        only one that touches _mount_fingerprint.
        """
        fingerprint = state.mount_fingerprint(self.paths)
        if only_mounts and fingerprint is not None and fingerprint == self._mount_fingerprint:
            return None, False
        locked = layout.sysroot_locked(self.paths.sysroot)
        if locked and not read_locked:
            return None, True
        snapshot = state.read_snapshot(self.paths)
        locked = layout.sysroot_locked(self.paths.sysroot) or locked
        snapshot = self._with_boots(snapshot)
        # Taken before the read: a mount change racing the read makes the next wakeup read again.
        self._mount_fingerprint = fingerprint
        return snapshot, locked

    def _with_boots(self, snapshot: model.Snapshot) -> model.Snapshot:
        """SNAPSHOT with the boot records and BootAssessment (docs/boot-outcome.md); in the scan thread."""
        if self.boots is not None:
            return self.boots.decorate(snapshot, self._boot_complete)
        from . import boottracker  # after READY=1, in the scan thread

        return boottracker.with_assessment(snapshot, sysroot=self.paths.sysroot, boot_complete=self._boot_complete)

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
        self.request_scan(full=False)

    def _recheck(self) -> None:
        """The lock-held recheck: a full read (a held-back read may have been for the mounts alone)."""
        self._recheck_handle = None
        if self._stopping is not None and not self._stopping.is_set():
            self.request_scan()

    def _schedule_recheck(self, at: float) -> None:
        loop = self._loop
        assert loop is not None
        if self._recheck_handle is not None:
            self._recheck_handle.cancel()
        self._recheck_handle = loop.call_at(at, self._recheck)

    def _past_lock_wait(self) -> bool:
        """Whether reads have been held back for ostree's lock for OSTREEWATCH_LOCK_WAIT_MAX already."""
        loop = self._loop
        assert loop is not None
        return self._held_since is not None and loop.time() >= self._held_since + self.lock_wait_max

    def _hold_or_release(self, new: model.Snapshot | None, locked: bool) -> model.Snapshot | None:
        """The snapshot to publish: NEW, or None while ostree's lock was held around its read (up to the limit).

        NEW is None when the read was skipped because the lock was held. Past
        OSTREEWATCH_LOCK_WAIT_MAX, NEW is published with problem sysroot-lock-held.
        """
        loop = self._loop
        assert loop is not None
        if not locked:
            assert new is not None
            if self._held_since is not None:
                log.debug("ostree's sysroot lock released; publishing")
            self._held_since = None
            if self._recheck_handle is not None:
                self._recheck_handle.cancel()
                self._recheck_handle = None
            return new
        now = loop.time()
        if self._held_since is None:
            self._held_since = now
            log.debug("ostree's sysroot lock is held; holding the new state back until it is released")
        deadline = self._held_since + self.lock_wait_max
        if now < deadline:
            self._schedule_recheck(min(now + LOCK_RECHECK, deadline))
            return None
        if new is None:  # the limit passed while this read was skipped: read now
            self._schedule_recheck(now)
            return None
        # Held too long (a stuck or very slow operation): publish what is there, saying so.
        self._schedule_recheck(now + LOCK_RECHECK)
        return state.with_lock_held(new, self.lock_wait_max)

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
                read_locked = self._past_lock_wait()
                try:
                    new, locked = await loop.run_in_executor(self._executor, self._read, only_mounts, read_locked)
                except Exception:
                    log.exception("reading the boot state failed; keeping the published one")
                else:
                    if new is not None or locked:
                        try:
                            publish = self._hold_or_release(new, locked)
                            if publish is not None:
                                diff = changes.diff(self.snapshot, publish)
                                if not diff.empty:
                                    # status.json first: whoever hears the D-Bus signal finds the file as new.
                                    await self._write_runfiles(publish, self.generation + 1)
                                elif self._bridge is not None:
                                    # grub.cfg is not in the snapshot: a new config (bootupd's static one)
                                    # changes what logind is told without a published change.
                                    self._runfiles_executor.submit(self._sync_bridge, publish)
                                self._apply(publish, diff)
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
            self._runfiles_warning(directory, str(e))
            return
        self._sync_bridge(snapshot)

    def _runfiles_warning(self, directory: str, error: str) -> None:
        self.journal.log(
            LOG_WARNING, f"cannot write {runfiles.STATUS_FILE} in {directory}: {error}", runtime_dir=directory
        )

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

    async def set_entry(self, which: str, entry_id: str, gate: authz.Gate) -> None:
        """SetDefaultEntry / SetNextEntry: the writer's job, then the new state published."""
        await self._refresh_after(gate, self._writer().set_entry(which, entry_id, gate, self.snapshot))

    async def set_deployment(self, deployment_id: str, gate: authz.Gate) -> str:
        """SetDefaultDeployment: the writer's job, then the new state published; the entry that boots it."""
        entry = await self._refresh_after(gate, self._writer().set_deployment(deployment_id, gate, self.snapshot))
        published = (e.id for e in self.snapshot.BootEntries if e.deployment == deployment_id)
        return next(published, entry)

    async def authorized_reload(self, gate: authz.Gate) -> int:
        """Reload() over the bus: authorized through the call's gate (uid 0 or polkit), then a rescan."""
        return await self._writer().reload(gate, self.reload, self.snapshot)

    async def _refresh_after(self, gate: authz.Gate, write: Awaitable[T]) -> T:
        """Run WRITE; once it was authorized, rescan and publish before answering, whether it succeeded
        or not (a failed write may have changed files too), so the caller's answer follows the new state."""
        try:
            return await write
        finally:
            if gate.granted_by is not None:
                await self.reload()

    # -- bus --

    def bus_address(self) -> str:
        """The address --bus resolves to, so the log names the socket (`system` alone does not)."""
        return busnames.bus_address(self.bus_spec) or "(unset)"

    async def _bus_loop(self) -> None:
        from . import service  # loaded by run() before this task starts

        path = busnames.socket_path(self.bus_spec)
        backoff = 0.5
        said_missing = False
        shutting_down = False
        stopping = self._stopping
        assert stopping is not None
        # Not `while True`: the stop's cancellation of this task can be lost on the way (Python
        # 3.11's asyncio.wait_for returns the result of an await that finished in the same loop
        # iteration as the cancellation, as system_stopping()'s may when systemd's SIGTERM ends its
        # systemctl). Without these checks the task went on to wait for the bus socket, and the
        # daemon never exited: tests/test_daemon_shutdown.py hung 3 of about 80 power-offs.
        while not stopping.is_set():
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
                        LOG_INFO if shutting_down else LOG_NOTICE,
                        f"waiting for the D-Bus {kind}bus at {self.bus_address()} ({e}); watching state meanwhile",
                        bus=self.bus_spec,
                    )
                    said_missing = True
                if stopping.is_set():
                    break
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
            self._tasks.append(asyncio.ensure_future(self._watch_boot_complete(service, bus)))
            await self._own_name(service, bus)
            reason = "disconnected"
            try:
                await bus.wait_for_disconnect()
            except Exception as e:  # noqa: BLE001 - whatever ended the connection, reconnect
                reason = str(e) or type(e).__name__
            self.manager.detach(bus)
            service.close_bus(bus)  # else the daemon keeps the old connection, and our name with it
            self.bus = None
            # At shutdown the system bus may stop before this unit (neither is ordered against the
            # other): an expected loss, not a warning.
            systemd_says = stopping.is_set() or await system_stopping()
            # Asked again: a stop that came while asking ends the question too (systemd's SIGTERM
            # reaches the whole cgroup, systemctl included, which then answers nothing).
            shutting_down = systemd_says or stopping.is_set()
            self.journal.bus_lost(self.bus_spec, reason, shutting_down=shutting_down)

    async def _own_name(self, service: Any, bus: Any) -> None:
        """Ask for the bus name; when another connection holds it, one line now and one when it comes to us."""
        # The bus sends NameAcquired before RequestName's reply when the name is free, and once the
        # holder lets go when queued; that one may even be handled before this coroutine resumes.
        queued = False
        acquired_early = False

        def acquired() -> None:
            nonlocal acquired_early
            if queued:
                self.journal.log(
                    LOG_INFO,
                    f"{service.BUS_NAME} on {self.bus_spec}: the other connection released it, this daemon "
                    "owns the name now and answers",
                    bus=self.bus_spec,
                )
            else:
                acquired_early = True

        service.watch_name(bus, acquired)
        try:
            owner = await service.own_name(bus)
        except Exception as e:  # noqa: BLE001 - the daemon keeps serving without the name
            owner = False
            log.warning("RequestName failed: %s", e)
        if owner:
            self.journal.bus_connected(self.bus_address(), bus.unique_name or "")
            return
        # One line: a second ostreewatchd on the same bus is not an error, it stands by.
        self.journal.log(
            LOG_WARNING,
            f"{service.BUS_NAME} is owned by another connection on {self.bus_spec}: waiting for the name "
            "(this daemon takes over when that one releases it)",
            bus=self.bus_spec,
        )
        queued = True
        if acquired_early:
            acquired()

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

    async def run(self, first: model.Snapshot | None = None) -> int:
        """Serve until SIGTERM/SIGINT. FIRST: the snapshot main() read before READY=1 (None: read it here)."""
        self._loop = loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        # Signals that came before the loop took them over (main(): _notify.remember_signals).
        for pending in _notify.pending_signals:
            if pending == signal.SIGHUP:
                self._pending = True
            else:
                self._stopping.set()
        _notify.pending_signals.clear()
        self._start_watcher(loop)
        if first is None:
            first, locked = await loop.run_in_executor(self._executor, self._read)
            assert first is not None  # only a read for the mount table alone returns None
            # The first read is published as it is (READY=1 cannot wait for ostree); with ostree's
            # lock held, the state after its release follows, at the latest by the recheck.
            reread = locked
        else:
            # Read before the watches were set: one read more catches what changed in between.
            reread = True
        if reread:
            self._pending = True
        # The boot records and BootAssessment: judged here, after READY=1 when main() sent it
        # (docs/boot-outcome.md); still generation 1, before the first journal records.
        self.snapshot = await loop.run_in_executor(self._executor, self._with_boots, first)
        self.generation = 1
        self._ready = True
        if not self._ready_sent:
            # Before READY=1: a unit ordered after ours finds status.json there.
            await self._write_runfiles(self.snapshot, self.generation)
            sd_notify("READY=1\nSTATUS=" + status_line(self.snapshot))
        else:  # main() wrote status.json before READY=1
            self._runtime_dir_ok = self._first_runfiles_error is None
            if self._first_runfiles_error is not None and self.runtime_dir is not None:
                self._runfiles_warning(self.runtime_dir, self._first_runfiles_error)
            if self.snapshot != first:  # status.json of generation 1 gains the boot records
                await self._write_runfiles(self.snapshot, self.generation)
        # The first journal records follow READY=1 (the journal is not needed to be ready).
        self.journal.started(self.snapshot, __version__)
        self._export_textfile()
        for problem in self.snapshot.Problems:
            self.journal.problem_appeared(problem)
        self._begin_boots(loop)
        if self.watcher is not None and self.watcher.mount_probe_note:
            log.info("%s", self.watcher.mount_probe_note)
        if self._pending:
            self._pending = False
            self.request_scan()
        if self._stopping.is_set():  # stopped while starting: no bus side to load
            return await self._stop()
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
            efivars=os.environ.get("OSTREEWATCH_EFIVARS", bootwrite.EFIVARS),
            deploy_python=os.environ.get("OSTREEWATCH_DEPLOY_PYTHON", bootwrite.DEPLOY_PYTHON),
        )
        self._start_watchdog(loop)
        self._tasks.append(asyncio.ensure_future(self._bus_loop()))
        await self._stopping.wait()
        return await self._stop()

    async def _stop(self) -> int:
        sd_notify("STOPPING=1")
        await self._shutdown()
        return 0

    async def _read_before_stop(self) -> None:
        """One last read, so the boot records end with what the boot loader will boot next.

        A shutdown step may have just changed it (the logind bridge writes next_entry right
        before this unit stops: docs/logind.md), faster than the debounce or a read in flight;
        without this read the next boot would be judged against a stale expectation.
        """
        if self.boots is None or not self._ready:
            return
        try:
            await asyncio.wait_for(self.wait_scan(self.request_scan()), STOP_READ_MAX)
        except asyncio.TimeoutError:
            log.warning(
                "the last read before stopping took more than %.0f s; the boot records keep the one before",
                STOP_READ_MAX,
            )
        except Exception:  # noqa: BLE001 - stopping goes on whatever the read did
            log.exception("the last read before stopping failed")

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
        await self._read_before_stop()
        if self._recheck_handle is not None:
            self._recheck_handle.cancel()
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


def _import_without(absent: tuple[str, ...], load: Callable[[], T]) -> T:
    """LOAD() with the modules ABSENT (not imported yet) failing to import, as if not installed.

    For the optional imports of libraries that the daemon never uses: each `try: import X`
    then takes its ImportError branch. Removed after, so a later import of X works.
    """
    blocked = [name for name in absent if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # None: the import raises ImportError
    try:
        return load()
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def _import_asyncio() -> types.ModuleType:
    import asyncio

    return asyncio


def _load_runtime() -> None:
    """The event loop's modules, imported after READY=1 and bound as this module's globals (idempotent)."""
    if "asyncio" in globals():
        return
    # asyncio imports ssl if it can, for TLS transports the daemon never opens; ssl maps OpenSSL's
    # libssl and libcrypto: 1.1 MB of settled RSS, and libcrypto's 3.4 MB when nothing else loads it.
    asyncio = _import_without(("ssl",), _import_asyncio)
    import concurrent.futures
    import logging
    import signal
    import threading
    import time
    import types

    from . import busnames, changes, textfile
    from .journal import LOG_INFO, LOG_NOTICE, LOG_WARNING, Journal
    from .watcher import PathWaiter, Watcher

    globals().update(
        asyncio=asyncio,
        busnames=busnames,
        LOG_INFO=LOG_INFO,
        concurrent=concurrent,
        logging=logging,
        signal=signal,
        threading=threading,
        time=time,
        types=types,
        changes=changes,
        textfile=textfile,
        LOG_NOTICE=LOG_NOTICE,
        LOG_WARNING=LOG_WARNING,
        Journal=Journal,
        PathWaiter=PathWaiter,
        Watcher=Watcher,
    )


def _load_bus_side() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """The service (dbus_next), boot writer and logind bridge modules, imported after READY=1 (in a thread)."""
    # dbus_next's package imports its GLib bus too, and that imports gi (PyGObject, GLib, GIO)
    # when the host has it: 3.6 MB of settled RSS for a bus the daemon never uses (asyncio's).
    return _import_without(("gi",), _import_bus_side)


def _import_bus_side() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    from . import bootwrite, rebootentry, service

    return service, bootwrite, rebootentry


def check_bus_spec(spec: str) -> None:
    """Raise InvalidArgs for a --bus value that is neither system, session nor a D-Bus address."""
    if spec in ("system", "session"):
        return
    from .parse.busaddress import parse_address  # re and urllib.parse: only for an address

    try:
        parse_address(spec)
    except errors.BusAddressError as e:
        raise errors.InvalidArgs(f"--bus {spec!r}: not system, session or a D-Bus address ({e})") from None


def build_parser() -> argparse.ArgumentParser:
    """The full parser: --help, --version, man pages, and any command line _parse_plain() leaves to it."""
    import argparse

    from .cli import HelpFormatter
    from .sample import DEFAULT, NAMES
    from .sample import add_argument as add_sample_argument

    p = argparse.ArgumentParser(
        prog="ostreewatchd", description="Publish an OSTree host's boot state on D-Bus.", formatter_class=HelpFormatter
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--bus", default="system", metavar="BUS", help="system, session or a D-Bus address (default: system)"
    )
    p.add_argument("--sysroot", default="/", metavar="DIR", help="the sysroot to watch (default: /)")
    p.add_argument(
        "--mountinfo", default="/proc/1/mountinfo", metavar="FILE", help="the mount table (default: /proc/1/mountinfo)"
    )
    p.add_argument(
        "--cmdline", default="/proc/cmdline", metavar="FILE", help="the kernel command line (default: /proc/cmdline)"
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


class Args:
    """ostreewatchd's options; the defaults are build_parser()'s."""

    __slots__ = (
        "bus", "sysroot", "mountinfo", "cmdline", "run", "debounce_ms", "log_level", "sample", "textfile_dir",
        "runtime_dir", "prepare_logind", "apply_reboot_entry", "state_dir", "boot_id_file",
    )  # fmt: skip

    def __init__(self) -> None:
        self.bus = "system"
        self.sysroot = "/"
        self.mountinfo = "/proc/1/mountinfo"
        self.cmdline = "/proc/cmdline"
        self.run = "/run"
        self.debounce_ms = DEFAULT_DEBOUNCE_MS
        self.log_level = "info"
        self.sample: str | None = None
        self.textfile_dir: str | None = None
        self.runtime_dir: str | None = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
        self.prepare_logind = False
        self.apply_reboot_entry = False
        self.state_dir: str | None = None  # None: $STATE_DIRECTORY, else /var/lib/ostreewatch (_boots)
        self.boot_id_file = "/proc/sys/kernel/random/boot_id"


_LOG_LEVELS = ("debug", "info", "warning", "error")
_FLAGS = ("prepare_logind", "apply_reboot_entry")  # store_true, one of them at most
_SAMPLE_NAMES = ("rhcos", "silverblue")  # ostreewatch/sample's NAMES (tests/test_daemon_start.py compares)


def _parse_plain(argv: list[str]) -> Args | None:
    """The exact `--option VALUE` / `--option=VALUE` forms, as argparse reads them; None for anything else.

    argparse costs ~10 ms of imports at every boot; whatever this does not take for certain
    (help, --version, abbreviations, errors) goes to build_parser(), which gives the same values.
    """
    args = Args()
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        i += 1
        dest = name[2:].replace("-", "_") if name.startswith("--") else ""
        if dest not in Args.__slots__:
            return None
        if dest in _FLAGS:
            if eq or getattr(args, dest) or any(getattr(args, f) for f in _FLAGS):
                return None  # a value, a repeat, or both: argparse says what it says
            setattr(args, dest, True)
            continue
        if not eq:
            if i < len(argv) and not argv[i].startswith("-"):
                value = argv[i]
                i += 1
            elif dest == "sample":  # nargs="?": the default sample
                value = _SAMPLE_NAMES[0]
            else:
                return None
        if dest == "debounce_ms":
            try:
                args.debounce_ms = int(value)
            except ValueError:
                return None
            continue
        if (dest == "log_level" and value not in _LOG_LEVELS) or (dest == "sample" and value not in _SAMPLE_NAMES):
            return None
        setattr(args, dest, value)
    return args


def parse_args(argv: list[str] | None = None) -> Args:
    """ostreewatchd's command line: by hand when plain, else by argparse (which may exit, as it does)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_plain(argv)
    if args is not None:
        return args
    namespace = build_parser().parse_args(argv)
    args = Args()
    for name in Args.__slots__:
        setattr(args, name, getattr(namespace, name))
    return args


def _paths(args: Args) -> model.Paths:
    if args.sample:
        return _sample_paths(args.sample)
    return model.Paths(sysroot=args.sysroot, mountinfo=args.mountinfo, cmdline=args.cmdline, run=args.run)


def _sample_paths(name: str) -> model.Paths:
    """The bundled sample's Paths (materialized in a temp dir removed at exit)."""
    from . import sample

    return sample.paths_for(name)


def _boots(args: Args, paths: model.Paths, stamp: str | None) -> BootTracker | None:
    """The boot records keeper (docs/boot-outcome.md); None with --state-dir "" or a sample host."""
    state_dir = args.state_dir
    if state_dir is None:
        if args.sample:
            return None  # a sample is not this machine's boot: keep no records unless asked
        state_dir = (os.environ.get("STATE_DIRECTORY") or "").split(":")[0] or "/var/lib/ostreewatch"
    if not state_dir:
        return None
    from .boottracker import BootTracker

    tracker = BootTracker(state_dir, args.boot_id_file, paths.sysroot)
    tracker.set_finalize_stamp(stamp)
    return tracker


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="ostreewatchd: %(levelname)s %(name)s: %(message)s",
    )


def _first_runfiles(runtime_dir: str | None, first: model.Snapshot) -> str | None:
    """status.json of the first snapshot, before READY=1; the error, journaled once the journal is loaded."""
    if not runtime_dir:  # "" as the Daemon takes it: off
        return None
    try:
        runfiles.ensure_dir(runtime_dir)
        runfiles.write_status(runtime_dir, first, 1, __version__)
    except OSError as e:
        return str(e)
    return None


def _finalize_stamp(paths: model.Paths) -> str | None:
    """The text of ostree's /boot/ostree/finalize-failure.stamp; None when there is none (a plain read)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(os.path.join(paths.sysroot, "boot", "ostree", "finalize-failure.stamp"), flags)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_mode & 0o170000 != 0o100000:  # not a regular file: not ostree's
            return None
        return os.read(fd, 65536).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _first_read(paths: model.Paths) -> tuple[model.Snapshot, tuple[tuple[model.Mount, ...], int] | None]:
    """The first snapshot, and the mount fingerprint taken before it (as Daemon._read does)."""
    fingerprint = state.mount_fingerprint(paths)
    return state.read_snapshot(paths), fingerprint


def main(argv: list[str] | None = None) -> int:
    # --- before READY=1 -------------------------------------------------------------------
    # Every import and every step here delays every boot (the unit orders before
    # local-fs.target): the first snapshot, status.json, READY=1, nothing else. tests/test_daemon_start.py
    # pins the modules imported up to READY=1; its docstring says how to add one on purpose.
    _notify.remember_signals()
    args = parse_args(argv)
    try:
        check_bus_spec(args.bus)
        paths = _paths(args)
    except (errors.OstreewatchError, ImportError, OSError) as e:
        print(f"ostreewatchd: {e}", file=sys.stderr)
        return 1
    if args.prepare_logind or args.apply_reboot_entry:
        _load_runtime()
        return _logind_step(args, paths)
    try:
        first, fingerprint = _first_read(paths)
    except (errors.OstreewatchError, OSError) as e:
        print(f"ostreewatchd: {e}", file=sys.stderr)
        return 1
    # Before ostree-boot-complete.service (ordered after our READY=1 by the unit) removes it.
    stamp = _finalize_stamp(paths)
    # status.json before READY=1: a unit ordered after ours finds it there (docs/logind.md).
    runfiles_error = _first_runfiles(args.runtime_dir, first)
    ready_sent = _notify.notify_before_loop("READY=1\nSTATUS=" + status_line(first))
    # --- after READY=1 --------------------------------------------------------------------
    _load_runtime()
    _setup_logging(args.log_level)
    try:
        daemon = Daemon(
            paths,
            args.bus,
            args.debounce_ms,
            textfile_dir=args.textfile_dir,
            runtime_dir=args.runtime_dir,
            boots=_boots(args, paths, stamp),
        )
    except (errors.OstreewatchError, ImportError, OSError) as e:
        print(f"ostreewatchd: {e}", file=sys.stderr)
        return 1
    daemon._mount_fingerprint = fingerprint
    daemon._ready_sent = ready_sent
    daemon._first_runfiles_error = runfiles_error
    debug = os.environ.get("OSTREEWATCH_ASYNCIO_DEBUG") == "1"
    loop = asyncio.new_event_loop()
    if debug:
        # A test sets this: any callback holding the loop for 250 ms is reported on stderr. What it
        # looks for is a blocking call (a lock wait, a FIFO, a slow read: seconds); a step of a few
        # milliseconds can take 100 ms of wall time on a machine loaded tenfold.
        loop.set_debug(True)
        loop.slow_callback_duration = 0.25
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    try:
        return loop.run_until_complete(daemon.run(first))
    except errors.OstreewatchError as e:
        print(f"ostreewatchd: {e}", file=sys.stderr)
        return 1
    finally:
        loop.close()


def _logind_step(args: Args, paths: model.Paths) -> int:
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
