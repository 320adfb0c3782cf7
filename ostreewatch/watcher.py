"""Turns inotify and mountinfo events into a "rescan soon" callback.

The only module importing pyinotify. Nothing here polls: the inotify fd and a
private epoll holding the mountinfo fd are handed to the event loop with
`add_reader`; with nothing changing, the process never wakes up.

pyinotify's WatchManager owns the inotify fd and the watches; its Notifier is
not used to read: it reads the whole kernel queue at once, slowly enough per
event to stall the loop on a burst, and it raises on a file name that is not
UTF-8. Events are read here in bounded chunks and parsed with struct
(docs/design-notes.md has the figures).

The set of watches is recomputed from the file system (`_rescan`) after
anything structural happens: the `boot/loader` symlink swap, a watched
directory removed, moved, replaced or unmounted. A path that does not exist
yet is stood in for by a watch on its nearest existing ancestor, so it is
picked up when it appears. Watches are keyed by inode: a directory replaced
under the same name, or a /boot mounted again, gets a fresh watch.

Deployments: ostree's write_deployments bumps the mtime of ostree/deploy and
only THEN runs its cleanup, which deletes the undeployed deployment
directories and their .origin files (ostreedev/ostree
src/libostree/ostree-sysroot-deploy.c: ostree_sysroot_write_deployments_with_options
calls write_deployments_finish -> _ostree_sysroot_bump_mtime, then
ostree_sysroot_cleanup when do_postclean; src/libostree/ostree-sysroot-cleanup.c:
cleanup_old_deployments rm -rf's ORIGIN and CSUM.SERIAL). A rescan on the
bump alone still sees the deleted deployment and nothing later would correct
it, so each ostree/deploy/OSNAME/deploy directory is watched for its children
appearing and going ("deployments"). Never inside a deployment: each holds a
whole OS.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import select
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

import pyinotify
from pyinotify import (  # the event bits, as Linux's inotify.h names them
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
)

from . import mountprobe
from .layout import GRUB_DIRS, GRUB_SOURCED, SYSROOT_LOCK
from .model import Paths

# pyinotify logs to stderr from inside its event processing (events for a
# watch just removed, moves it cannot follow); this module handles all of those.
pyinotify.log.setLevel(logging.CRITICAL)

_NAMES = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM
_SELF = IN_DELETE_SELF | IN_MOVE_SELF  # IN_UNMOUNT and IN_IGNORED come unasked
_DIR = _NAMES | _SELF | IN_ONLYDIR
_GONE = IN_UNMOUNT | IN_DELETE_SELF | IN_MOVE_SELF
SYSROOT_LOCK_NAME = os.path.basename(SYSROOT_LOCK)

_BOOT_LINK = re.compile(r"boot\.[0-9]+")

# A sysroot has one or two stateroots; a bound keeps a junk-filled ostree/deploy
# from eating the inotify watch budget (the mtime bump still covers the rest).
_MAX_STATEROOTS = 64
# During a mount storm that leaves the watched mount points alone, "mounts" is still reported
# this often (see _mount_fire).
MOUNT_RECHECK_EVERY = 30.0
# The same where the points are probed in the daemon's own namespace (mountprobe.probe_root), which
# does not see a change of per-mount flags alone made in PID 1's.
MOUNT_RECHECK_APPROX = 2.0

# struct inotify_event; one read takes at most this much (about 2,000 events), then
# the loop serves others before the next chunk.
_EVENT = struct.Struct("iIII")
_READ_SIZE = 64 * 1024


def _events(buf: bytes) -> Iterator[tuple[int, int, str]]:
    """(wd, mask, name) of each struct inotify_event read from an inotify fd."""
    offset = 0
    while offset + _EVENT.size <= len(buf):
        wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
        start = offset + _EVENT.size
        offset = start + length
        # NUL-padded; never decoded strictly: a non-UTF-8 name is just a name.
        yield wd, mask, os.fsdecode(buf[start:offset].split(b"\0", 1)[0]) if length else ""


class PathWaiter:
    """Wait, without polling, until a file (the bus socket) is created at PATH.

    A one-shot inotify watch on the file's directory, or on its nearest existing
    ancestor when the directory is missing (then any creation there ends the
    wait and the caller looks again). Set up *before* trying to connect, so a
    socket created in between is not missed. OSError when no watch can be set.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._wm: pyinotify.WatchManager | None = pyinotify.WatchManager()
        self.fd = self._wm.get_fd()
        os.set_inheritable(self.fd, False)
        os.set_blocking(self.fd, False)
        directory = os.path.dirname(path) or "."
        self.name: str | None = os.path.basename(path)
        while not os.path.isdir(directory) and directory not in ("/", ""):
            directory, self.name = os.path.dirname(directory), None
        mask = IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
        wd = self._wm.add_watch(directory, mask, quiet=True).get(directory, -1)
        if wd is None or wd < 0:
            self.close()
            raise OSError(f"inotify_add_watch {directory} failed")

    async def wait(self) -> None:
        """Return once the file may be there (or the watched directory went away)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return
            for _wd, mask, name in _events(data):
                hit = mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED) or self.name is None or name == self.name
                if hit and not done.done():
                    done.set_result(None)

        loop.add_reader(self.fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        """Drop the watch and its fd; idempotent."""
        if self._wm is not None:
            self._wm.close()
            self._wm = None
            self.fd = -1


class _Event(NamedTuple):
    """One event in a watched directory, as a _classify handler sees it."""

    role: str
    reason: str
    name: str
    mask: int
    structural: bool  # a name appeared, went or moved
    mountinfo: str  # the base name of the watched mountinfo file


# What a handler decides: the on_change reason (None: nothing), and whether to re-arm the watches.
_Verdict = tuple[Optional[str], bool]
_NOTHING: _Verdict = (None, False)


def _on_boot(ev: _Event) -> _Verdict:
    if ev.name == "loader":
        return "loader-swap", True
    return None, ev.name in ("grub2", "grub", "efi") and ev.structural


def _on_loader(ev: _Event) -> _Verdict:
    if ev.name == "loader.conf":
        return "loader.conf", False
    if ev.name == "entries" and ev.structural:
        return "entries", True
    return _NOTHING


def _on_grub(ev: _Event) -> _Verdict:
    if ev.name == "grubenv":
        return "grubenv", ev.structural  # it may have become a symlink into the ESP
    if ev.name == "grub.cfg" or ev.name in GRUB_SOURCED:
        return "grub.cfg", False  # the default is grub.cfg run with the grubenv (state.py)
    return _NOTHING


def _on_efi_loader(ev: _Event) -> _Verdict:
    return ("loader.conf", False) if ev.name == "loader.conf" else _NOTHING


def _on_ostree(ev: _Event) -> _Verdict:
    if _BOOT_LINK.fullmatch(ev.name):
        return "boot-links", False
    if ev.name == SYSROOT_LOCK_NAME and ev.mask & (IN_DELETE | IN_CLOSE_WRITE):
        # ostree unlinks ostree/lock, then closes it, when it unlocks (libglnx's release):
        # the unlink is already the release for a probe that opens the file by name.
        return "lock-released", False
    if ev.name == "deploy" and ev.structural:
        return "deploy-mtime", True
    return _NOTHING


def _on_deploy(ev: _Event) -> _Verdict:
    if ev.mask & IN_ATTRIB:
        return "deploy-mtime", False
    if ev.structural:
        # A stateroot appeared or went: the re-arm reports "deployments" for a new
        # OSNAME/deploy watch; a removed one reports it through IN_IGNORED.
        return "deployments", True
    return _NOTHING


def _on_os_deploy(ev: _Event) -> _Verdict:
    # CSUM.SERIAL or CSUM.SERIAL.origin appeared, went or was renamed.
    return ("deployments", False) if ev.structural else _NOTHING


def _on_run_ostree(ev: _Event) -> _Verdict:
    return ("staged", False) if ev.name.startswith("staged-deployment") else _NOTHING


def _on_mountinfo(ev: _Event) -> _Verdict:
    return ("mounts", False) if ev.name == ev.mountinfo else _NOTHING


def _on_file(ev: _Event) -> _Verdict:
    return (ev.reason, False) if ev.name == ev.role[len("file:") :] else _NOTHING


def _on_parent(ev: _Event) -> _Verdict:
    if not ev.structural:
        return _NOTHING
    # RUN/ostree-booted is a file: it appears and goes in the RUN or parent watch.
    if ev.name == "ostree-booted":
        return "booted", True
    return None, True  # something appeared on the way to a missing target: look again


# Watch role -> what an event there means. "file:NAME" roles share one handler.
_HANDLERS: dict[str, Callable[[_Event], _Verdict]] = {
    "boot": _on_boot,
    "loader": _on_loader,
    "entries": lambda ev: ("entries", False),
    "grub": _on_grub,
    "efi-loader": _on_efi_loader,
    "ostree": _on_ostree,
    "deploy": _on_deploy,
    "os-deploy": _on_os_deploy,
    "run-ostree": _on_run_ostree,
    "booted": lambda ev: ("booted", False),
    "mountinfo": _on_mountinfo,
    "file": _on_file,
    "parent": _on_parent,
}


@dataclass(frozen=True)
class _Target:
    role: str
    path: str
    mask: int
    reason: str  # on_change reason when the target itself changes or (re)appears
    root: str  # never watch above this directory when standing in for a missing target
    stand_in: bool = True  # when missing, watch the nearest existing ancestor


@dataclass
class _Armed:
    wd: int
    mask: int
    path: str
    roles: set[tuple[str, str]] = field(default_factory=set)  # (role, reason)


class Watcher:
    """Calls on_change(reason) when the boot state may have changed; never polls.

    on_change only means "rescan soon": the caller debounces. Reasons:
    entries, loader-swap, loader.conf, grubenv, grub.cfg (or a file it sources),
    boot-links, deploy-mtime,
    deployments (a deployment directory or .origin appeared or went; comes after
    ostree's cleanup, unlike deploy-mtime), staged, booted, mounts, overflow
    (events were lost: rescan everything).
    """

    def __init__(
        self,
        paths: Paths,
        on_change: Callable[[str], None],
        loop: asyncio.AbstractEventLoop,
        *,
        mount_min_interval: float = 0.05,
    ) -> None:
        self.paths = paths
        self.on_change = on_change
        self.loop = loop
        self.mount_min_interval = mount_min_interval
        self._wm: pyinotify.WatchManager | None = None
        self._fd = -1
        self._armed: dict[tuple[int, int], _Armed] = {}  # (st_dev, st_ino) -> watch
        self._wd_roles: dict[int, list[tuple[str, str]]] = {}  # wd -> (role, reason) of its inodes
        self._mi_file: Any | None = None
        self._mi_epoll: select.epoll | None = None
        self._mi_reader = False
        self._mi_last = float("-inf")
        self._mi_probe: mountprobe.Probe | None = None  # the watched points at the last report
        self._mi_probe_root: tuple[str, bool] | None = None
        self._mi_reported = float("-inf")
        # Where a mount means "re-arm": the watched sysroot's boot file systems, in this namespace.
        sysroot = str(paths.sysroot)
        self._rearm_points = tuple(
            os.path.join(sysroot, p)
            for p in ("", "boot", "boot/efi")
            if os.path.join(sysroot, p).rstrip("/") not in ("", "/boot", "/boot/efi")
        )
        self._mi_trailing: asyncio.TimerHandle | None = None
        self._mi_is_file = False  # mountinfo given as a plain file: watched with inotify
        # How the mount table is watched: "epoll", "inotify" (a plain file), "none" (unreadable).
        self.mount_watch = "none"
        # How the watched mount points are probed, when it is less than exact (the daemon logs it).
        self.mount_probe_note = ""
        self._batch_reasons: dict[str, None] = {}
        self._batch_rearm = False
        # Counters for tests and benchmarks.
        self.stats: dict[str, int] = {
            "inotify_wakeups": 0,
            "mount_wakeups": 0,
            "mount_callbacks": 0,
            "mount_unchanged": 0,
            "rearms": 0,
            "overflows": 0,
        }

    # --- life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Arm every watch; never raises for missing paths."""
        if self._wm is not None:
            return
        self._wm = pyinotify.WatchManager()
        self._fd = self._wm.get_fd()
        os.set_inheritable(self._fd, False)
        os.set_blocking(self._fd, False)
        self.loop.add_reader(self._fd, self._on_inotify_readable)
        self._start_mountinfo()
        self._rescan(fire=False)

    def stop(self) -> None:
        """Remove every watch and reader; idempotent."""
        if self._mi_trailing is not None:
            self._mi_trailing.cancel()
            self._mi_trailing = None
        if self._mi_epoll is not None:
            if self._mi_reader:
                self.loop.remove_reader(self._mi_epoll.fileno())
                self._mi_reader = False
            self._mi_epoll.close()
            self._mi_epoll = None
        if self._mi_file is not None:
            self._mi_file.close()
            self._mi_file = None
        if self._wm is not None:
            self.loop.remove_reader(self._fd)
            self._wm.close()  # closes the inotify fd: the kernel drops every watch
        self._wm = None
        self._fd = -1
        self._armed.clear()
        self._wd_roles.clear()

    def armed_paths(self) -> list[str]:
        """The paths watched right now (for tests and debugging)."""
        return sorted(a.path for a in self._armed.values())

    # --- what to watch ---------------------------------------------------------

    def _targets(self) -> list[_Target]:
        sysroot = os.path.abspath(str(self.paths.sysroot))
        run = os.path.abspath(str(self.paths.run))
        boot = os.path.join(sysroot, "boot")
        loader = os.path.join(boot, "loader")
        # Follow the `loader -> loader.N` symlink, but never out of boot/.
        real_loader = os.path.realpath(loader)
        real_boot = os.path.realpath(boot)
        loader_inside = os.path.commonpath([real_loader, real_boot]) == real_boot and real_loader != real_boot
        ostree = os.path.join(sysroot, "ostree")
        run_ostree = os.path.join(run, "ostree")
        targets = [_Target("boot", boot, _DIR, "loader-swap", sysroot)]
        if loader_inside:  # a loader link pointing out of boot/ is a problem for state.py, not a watch
            targets += [
                _Target("loader", real_loader, _DIR | IN_CLOSE_WRITE | IN_ATTRIB, "loader-swap", sysroot),
                _Target(
                    "entries",
                    os.path.join(real_loader, "entries"),
                    _DIR | IN_CLOSE_WRITE | IN_ATTRIB,
                    "entries",
                    sysroot,
                ),
            ]
        targets += [
            *(_Target("grub", os.path.join(sysroot, d), _DIR | IN_CLOSE_WRITE, "grubenv", sysroot) for d in GRUB_DIRS),
            _Target(
                "efi-loader",
                os.path.join(boot, "efi", "loader"),
                _DIR | IN_CLOSE_WRITE,
                "loader.conf",
                sysroot,
                stand_in=False,
            ),
            # IN_DELETE / IN_CLOSE_WRITE of ostree/lock: ostree's unlock, the end of its operation.
            _Target("ostree", ostree, _DIR | IN_CLOSE_WRITE, "boot-links", sysroot),
            # Names too: a stateroot (OSNAME directory) appearing or going re-arms.
            _Target("deploy", os.path.join(ostree, "deploy"), _DIR | IN_ATTRIB, "deploy-mtime", sysroot),
            # Standing in for RUN/ostree, RUN itself is watched only while it is missing.
            _Target("run-ostree", run_ostree, _DIR | IN_CLOSE_WRITE, "staged", run),
            _Target(
                "booted",
                os.path.join(run, "ostree-booted"),
                _SELF | IN_ATTRIB | IN_CLOSE_WRITE,
                "booted",
                run,
                stand_in=False,
            ),
        ]
        targets += self._stateroot_targets(os.path.join(ostree, "deploy"))
        # Fedora on UEFI: boot/grub2/grubenv is a symlink into the ESP; watch where it points too.
        for grub in GRUB_DIRS:
            env = os.path.join(sysroot, grub, "grubenv")
            if os.path.islink(env):
                real = os.path.realpath(env)
                if os.path.commonpath([real, sysroot]) == sysroot and os.path.dirname(real) != os.path.dirname(env):
                    targets.append(
                        _Target(
                            "file:" + os.path.basename(real),
                            os.path.dirname(real),
                            _DIR | IN_CLOSE_WRITE,
                            "grubenv",
                            sysroot,
                            stand_in=False,
                        )
                    )
        if self._mi_is_file:
            mi = os.path.abspath(str(self.paths.mountinfo))
            targets.append(
                _Target(
                    "mountinfo",
                    os.path.dirname(mi),
                    _DIR | IN_CLOSE_WRITE,
                    "mounts",
                    os.path.dirname(mi),
                    stand_in=False,
                )
            )
        return targets

    @staticmethod
    def _stateroot_targets(deploy: str) -> list[_Target]:
        """ostree/deploy/OSNAME/deploy of every stateroot: its children are the deployments."""
        try:
            with os.scandir(deploy) as it:
                # Real directories only: a symlinked stateroot could lead the watch out of the sysroot.
                names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            return []  # missing: the stand-in for ostree/deploy re-arms when it appears
        # Standing in for a missing OSNAME/deploy: OSNAME itself, never above it.
        return [
            _Target("os-deploy", os.path.join(deploy, name, "deploy"), _DIR, "deployments", os.path.join(deploy, name))
            for name in names[:_MAX_STATEROOTS]
        ]

    def _desired(self) -> dict[tuple[int, int], _Armed]:
        """Stat every target (or its stand-in ancestor): inode -> mask, path, roles."""
        want: dict[tuple[int, int], _Armed] = {}

        def add(path: str, mask: int, role: tuple[str, str]) -> bool:
            try:
                st = os.stat(path)
            except OSError:
                return False
            if mask & IN_ONLYDIR and not stat.S_ISDIR(st.st_mode):
                return False
            key = (st.st_dev, st.st_ino)
            item = want.setdefault(key, _Armed(wd=-1, mask=0, path=path))
            item.mask |= mask
            item.roles.add(role)
            return True

        for t in self._targets():
            if add(t.path, t.mask, (t.role, t.reason)) or not t.stand_in:
                continue
            parent = os.path.dirname(t.path)
            while len(parent) >= len(t.root) and parent != os.path.dirname(parent):
                if add(parent, _DIR, ("parent", t.reason)):
                    break
                parent = os.path.dirname(parent)
        return want

    def _rescan(self, fire: bool) -> None:
        """Bring the armed watches in line with the file system."""
        if self._wm is None:
            return
        want = self._desired()
        changed_reasons: list[str] = []
        keep_wds: set[int] = set()
        for key, item in want.items():
            old = self._armed.get(key)
            if old is not None and old.wd >= 0 and old.mask == item.mask:
                old.roles, old.path = item.roles, item.path
                keep_wds.add(old.wd)
                continue
            wd = self._wm.add_watch(item.path, item.mask, quiet=True).get(item.path, -1)
            if wd is None or wd < 0:
                continue  # vanished between stat and add_watch: its parent's event re-arms
            item.wd = wd
            self._armed[key] = item
            keep_wds.add(wd)
            if old is None:
                changed_reasons += [reason for _role, reason in item.roles]
        for key in [k for k in self._armed if k not in want]:
            gone = self._armed.pop(key)
            changed_reasons += [reason for _role, reason in gone.roles]
            # The same wd may now serve a desired inode (replaced between stat and add).
            if gone.wd not in keep_wds:
                self._wm.rm_watch(gone.wd, quiet=True)
                self._wm.del_watch(gone.wd)  # rm_watch keeps its record when the kernel already dropped it
        self._wd_roles = {}
        for armed in self._armed.values():
            self._wd_roles.setdefault(armed.wd, []).extend(sorted(armed.roles))
        if changed_reasons:
            self.stats["rearms"] += 1
        if fire:
            for reason in dict.fromkeys(changed_reasons):
                self._fire(reason)

    # --- inotify ---------------------------------------------------------------

    def _on_inotify_readable(self) -> None:
        self.stats["inotify_wakeups"] += 1
        try:
            buf = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            buf = b""
            self._batch_reasons = {"overflow": None}
            self._batch_rearm = True
        else:
            self._batch_reasons = {}
            self._batch_rearm = False
        for wd, mask, name in _events(buf):
            self._on_event(wd, mask, name)
        if "overflow" in self._batch_reasons:
            self.stats["overflows"] += 1
        for reason in self._batch_reasons:
            self._fire(reason)
        if self._batch_rearm:
            self._rescan(fire=True)

    def _on_event(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self._batch_reasons["overflow"] = None
            self._batch_rearm = True
            return
        roles = self._wd_roles.get(wd, ())
        if mask & (IN_IGNORED | _GONE):
            # The watched directory itself went away, moved or was unmounted.
            self._batch_rearm = True
            if mask & IN_IGNORED:
                assert self._wm is not None
                self._wm.del_watch(wd)
                self._wd_roles.pop(wd, None)
                for key in [k for k, a in self._armed.items() if a.wd == wd]:
                    del self._armed[key]
            for _role, reason in roles:
                self._batch_reasons[reason] = None
            return
        for role, reason in roles:
            self._classify(role, reason, name, mask)

    def _classify(self, role: str, reason: str, name: str, mask: int) -> None:
        """Decide what one event in a watched directory means (_HANDLERS, by the watch's role)."""
        handler = _HANDLERS.get(role.split(":", 1)[0] if role.startswith("file:") else role)
        if handler is None:
            return
        hit, rearm = handler(
            _Event(role, reason, name, mask, bool(mask & _NAMES), os.path.basename(str(self.paths.mountinfo)))
        )
        if rearm:
            self._batch_rearm = True
        if hit is not None:
            self._batch_reasons[hit] = None

    # --- mountinfo -------------------------------------------------------------

    def _start_mountinfo(self) -> None:
        path = str(self.paths.mountinfo)
        try:
            self._mi_file = open(path, "rb", buffering=0)  # noqa: SIM115 - kept open: epoll watches it until stop()
        except OSError:
            return  # no mount table to watch: everything else still works
        try:
            ep = select.epoll()
            ep.register(self._mi_file.fileno(), select.EPOLLPRI | select.EPOLLERR)
        except OSError:
            # A plain file (tests, --mountinfo FILE) cannot be polled: inotify it.
            ep.close()
            self._mi_file.close()
            self._mi_file = None
            self._mi_is_file = True
            self.mount_watch = "inotify"
            return
        self.mount_watch = "epoll"
        self._mi_epoll = ep
        # The points as the caller's first read will see them (it reads after start()).
        self._mi_probe_root = mountprobe.probe_root(path)
        self._mi_probe = self._probe_mounts()
        self._mi_reported = self.loop.time()
        if self._mi_probe is None:
            self.mount_probe_note = (
                f"cannot probe the watched mount points of {path} (no statx mount id, "
                "or no /proc access): every change of the mount table is reported"
            )
        elif self._mi_probe_root is not None and not self._mi_probe_root[1]:
            self.mount_probe_note = (
                f"the watched mount points of {path} are probed in this process's own "
                "mount namespace (no access to its root): a change of per-mount flags "
                f"alone during a mount storm is published within {MOUNT_RECHECK_APPROX:.0f} s"
            )
        self.loop.add_reader(ep.fileno(), self._on_mountinfo_readable)
        self._mi_reader = True

    def _drain_mountinfo(self) -> None:
        # The kernel clears the per-file "seen" state when the file is polled
        # (mounts_poll), not when it is read; the outer loop's readiness check
        # may already have done it, so poll(0) can return []: the wakeup itself
        # was the signal. No read needed (reading 2,000 mounts is the costly part).
        if self._mi_epoll is not None:
            self._mi_epoll.poll(0)

    def _on_mountinfo_readable(self) -> None:
        self.stats["mount_wakeups"] += 1
        self._drain_mountinfo()
        now = self.loop.time()
        due = self._mi_last + self.mount_min_interval
        if now >= due:
            self._mount_fire(now)
            return
        # Inside the interval: stop listening until it ends, then report once.
        # Changes in between are collected by the kernel and covered by that report.
        assert self._mi_epoll is not None
        self.loop.remove_reader(self._mi_epoll.fileno())
        self._mi_reader = False
        self._mi_trailing = self.loop.call_at(due, self._mount_trailing)

    def _mount_trailing(self) -> None:
        self._mi_trailing = None
        if self._mi_epoll is None:
            return
        self._drain_mountinfo()
        self.loop.add_reader(self._mi_epoll.fileno(), self._on_mountinfo_readable)
        self._mi_reader = True
        self._mount_fire(self.loop.time())

    def _probe_mounts(self) -> mountprobe.Probe | None:
        if self._mi_probe_root is None:
            return None
        return mountprobe.probe(self._mi_probe_root[0], own_points=self._rearm_points)

    def _mount_fire(self, now: float) -> None:
        self._mi_last = now
        # A storm of unrelated mounts leaves the watched points as they were: no callback,
        # no re-arm. Reported anyway when the last report is MOUNT_RECHECK_EVERY old, so a
        # remount that changes only filesystem options (no flag, no mount) is still seen.
        probe = self._probe_mounts()
        root = self._mi_probe_root
        assert root is not None or probe is None
        recheck = MOUNT_RECHECK_EVERY if probe is None or (root is not None and root[1]) else MOUNT_RECHECK_APPROX
        if probe is not None and probe == self._mi_probe and now - self._mi_reported < recheck:
            self.stats["mount_unchanged"] += 1
            return
        self._mi_probe = probe
        self._mi_reported = now
        self.stats["mount_callbacks"] += 1
        self._fire("mounts")
        # A /boot unmounted and mounted again leaves inotify watching the
        # covered directory: re-arm onto whatever is mounted now.
        self._rescan(fire=True)

    # --- callback --------------------------------------------------------------

    def _fire(self, reason: str) -> None:
        try:
            self.on_change(reason)
        except Exception as exc:  # noqa: BLE001 - the caller's bug must not kill the watcher
            self.loop.call_exception_handler(
                {"message": f"ostreewatch watcher: on_change({reason!r}) failed", "exception": exc}
            )
