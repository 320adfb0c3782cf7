"""Structured journal records with fixed MESSAGE_IDs; stderr when there is no journal.

The only module importing systemd.journal. Every record carries
SYSLOG_IDENTIFIER, a MESSAGE_ID constant below, a PRIORITY, a human-readable
MESSAGE and typed OSTREEWATCH_* fields (docs/journal.md). Fields that hold
several ids (OSTREEWATCH_DEPLOYMENTS_ADDED, ...) are repeated, one value per
id, so `journalctl OSTREEWATCH_DEPLOYMENTS_ADDED=ID` matches exactly.
Nothing here raises: a record that cannot reach the journal goes to stderr.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Callable, TextIO, TypeVar

from ostreewatch.changes import Changes
from ostreewatch.model import BootRecord, Problem, Snapshot

try:  # systemd-python is a hard dependency, but a broken install must not stop the daemon
    from systemd import journal as _sd_journal
except ImportError:  # pragma: no cover - exercised only on broken installs
    _sd_journal = None

MESSAGE_ID_STARTED = "f3d48fa3fb0d4738b5bb70c685396c1f"
MESSAGE_ID_CHANGED = "488341b5a41c468d9f349204a50f4972"
MESSAGE_ID_PROBLEM_APPEARED = "9bfbe0e2a307441eaf788b4dc8daa70c"
MESSAGE_ID_PROBLEM_CLEARED = "d0034dae0098497f9159685ec374a760"
MESSAGE_ID_WRITE_ATTEMPT = "64c23d02494a4656819de4e18f356173"
MESSAGE_ID_STOPPING = "459753d14c1e43aeb6addf71a7c527b1"
MESSAGE_ID_BUS_CONNECTED = "0cbf114ab1ef46c4ba9d4c3b90d5a899"
MESSAGE_ID_BUS_LOST = "b9b286b80dac431791901d192e96a63a"
MESSAGE_ID_BOOT_OUTCOME = "5d939b4156054d0287495192d5bb7224"

# syslog priorities (sd-daemon.h / syslog.h)
LOG_ERR = 3
LOG_WARNING = 4
LOG_NOTICE = 5
LOG_INFO = 6

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# Snapshot properties holding one string: journaled as _PREVIOUS / _CURRENT pairs.
_SCALAR_PROPERTIES = (
    "Bootloader",
    "OstreeBooted",
    "BootedDeployment",
    "DefaultDeployment",
    "RollbackDeployment",
    "StagedDeployment",
    "DefaultEntry",
    "DefaultEntrySource",
    "NextEntry",
    "BootedEntry",
)

# Every field a write-attempt record may carry (bootwrite fills them; the catalog entry and
# docs/journal.md name each, tests/test_audit.py keeps the three in step).
WRITE_ATTEMPT_FIELDS = (
    "caller_uid",
    "caller_pid",
    "caller_bus_name",
    "caller_unit",
    "method",
    "entry",
    "deployment",
    "previous",
    "new",
    "bootloader",
    "authorized_by",
    "changed",
    "reordered",
    "file",
    "result",
    "error",
    "suppressed",
)
# Refused write attempts: at most one record per caller uid per this many seconds; the
# others are counted in OSTREEWATCH_SUPPRESSED of the next record for that uid.
REFUSED_INTERVAL = 1.0
# The one result of a write attempt that went through (audit.py records it); any other is a refusal or failure.
WRITE_GRANTED = "granted"
# The results of attempts stopped before anything was tried (authorization refused, bad arguments):
# any caller can cause them, so they are rate-limited per uid.
WRITE_STOPPED = ("refused", "invalid")
_FIELD_RE = re.compile(r"[^A-Z0-9_]")
_PLAIN_RE = re.compile(r"[A-Za-z0-9_.,:/@+=%-]+")

Field = tuple[str, Any]


def _snake_upper(name: str) -> str:
    """DefaultEntry -> DEFAULT_ENTRY."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def field_name(key: str) -> str:
    """caller-uid / caller_uid -> OSTREEWATCH_CALLER_UID (a valid journal field name)."""
    name = _FIELD_RE.sub("_", key.upper()).lstrip("_")
    return ("OSTREEWATCH_" + name)[:64]


_F = TypeVar("_F", bound=Callable[..., None])


def _never_raise(method: _F) -> _F:
    """A record method that fails (a value whose str() raises...) logs that instead of raising."""

    @functools.wraps(method)
    def wrapper(self: Journal, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - logging must never kill the daemon
            self._to_stderr(
                [
                    f"MESSAGE=journal record {method.__name__} failed: {exc}",
                    f"PRIORITY={LOG_ERR}",
                    "SYSLOG_IDENTIFIER=" + self.identifier,
                    f"OSTREEWATCH_FORMAT_ERROR={exc.__class__.__name__}",
                ]
            )

    return wrapper  # type: ignore[return-value]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    return str(value)


class Journal:
    """Writes ostreewatch's records; `stream` is where they go without a journal."""

    def __init__(
        self,
        identifier: str = "ostreewatch",
        *,
        socket_path: str = JOURNAL_SOCKET,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identifier = identifier
        self.socket_path = socket_path
        self._stream = stream
        self._clock = clock
        # "uid result" -> (time of its last refused/invalid record, such calls suppressed since, fields of the last one)
        self._refused: dict[str, tuple[float, int, dict[str, Any]]] = {}

    # --- the record kinds ------------------------------------------------------

    @_never_raise
    def started(self, snapshot: Snapshot, version: str) -> None:
        """The daemon started and read its first snapshot."""
        booted = snapshot.BootedDeployment or "none"
        default = snapshot.DefaultDeployment or "none"
        message = (
            f"ostreewatch {version} started: booted {booted}, default {default}, "
            f"default entry {snapshot.DefaultEntry or 'none'}, {len(snapshot.Problems)} problem(s)"
        )
        self._emit(
            MESSAGE_ID_STARTED,
            LOG_INFO,
            message,
            [
                ("OSTREEWATCH_VERSION", version),
                ("OSTREEWATCH_BOOTLOADER", snapshot.Bootloader),
                ("OSTREEWATCH_OSTREE_BOOTED", snapshot.OstreeBooted),
                ("OSTREEWATCH_BOOTED_DEPLOYMENT", snapshot.BootedDeployment),
                ("OSTREEWATCH_DEFAULT_DEPLOYMENT", snapshot.DefaultDeployment),
                ("OSTREEWATCH_ROLLBACK_DEPLOYMENT", snapshot.RollbackDeployment),
                ("OSTREEWATCH_STAGED_DEPLOYMENT", snapshot.StagedDeployment),
                ("OSTREEWATCH_DEFAULT_ENTRY", snapshot.DefaultEntry),
                ("OSTREEWATCH_BOOTED_ENTRY", snapshot.BootedEntry),
                ("OSTREEWATCH_DEPLOYMENT_COUNT", len(snapshot.Deployments)),
                ("OSTREEWATCH_ENTRY_COUNT", len(snapshot.BootEntries)),
                ("OSTREEWATCH_PROBLEM_COUNT", len(snapshot.Problems)),
            ],
        )

    @_never_raise
    def changed(self, old: Snapshot, new: Snapshot, changes: Changes, generation: int) -> None:
        """One published change: what changed, with before and after."""
        fields: list[Field] = [("OSTREEWATCH_GENERATION", generation)]
        fields += [("OSTREEWATCH_CHANGED", name) for name in changes.changed_properties]
        summary: list[str] = []
        for prop in _SCALAR_PROPERTIES:
            if prop in changes.changed_properties:
                before, after = getattr(old, prop), getattr(new, prop)
                key = "OSTREEWATCH_" + _snake_upper(prop)
                fields += [(key + "_PREVIOUS", before), (key + "_CURRENT", after)]
                summary.append(f"{prop} {_text(before) or 'none'} -> {_text(after) or 'none'}")
        lists: Sequence[tuple[str, Iterable[str], str]] = (
            ("DEPLOYMENTS_ADDED", changes.deployments_added, "deployment(s) added"),
            ("DEPLOYMENTS_REMOVED", changes.deployments_removed, "deployment(s) removed"),
            ("ENTRIES_ADDED", changes.entries_added, "entry(ies) added"),
            ("ENTRIES_REMOVED", changes.entries_removed, "entry(ies) removed"),
            ("ENTRIES_MODIFIED", changes.entries_modified, "entry(ies) modified"),
            ("MOUNTS_CHANGED", changes.mount_points_changed, "mount point(s) changed"),
        )
        for key, ids, words in lists:
            ids = tuple(ids)
            fields += [("OSTREEWATCH_" + key, i) for i in ids]
            if ids:
                summary.append(f"{len(ids)} {words}: {' '.join(ids)}")
        fields += [("OSTREEWATCH_PROBLEMS_APPEARED", p.code) for p in changes.problems_appeared]
        fields += [("OSTREEWATCH_PROBLEMS_CLEARED", p.code) for p in changes.problems_cleared]
        if changes.problems_appeared or changes.problems_cleared:
            summary.append(f"problems +{len(changes.problems_appeared)} -{len(changes.problems_cleared)}")
        if not summary:
            summary.append(", ".join(changes.changed_properties) or "nothing")
        message = f"Boot state changed (generation {generation}): " + "; ".join(summary)
        self._emit(MESSAGE_ID_CHANGED, LOG_INFO, message, fields)

    @_never_raise
    def problem_appeared(self, problem: Problem) -> None:
        """A problem that was not in the previous snapshot."""
        self._emit(
            MESSAGE_ID_PROBLEM_APPEARED,
            LOG_WARNING,
            f"Problem {problem.code}" + (f" ({problem.subject})" if problem.subject else "") + f": {problem.message}",
            self._problem_fields(problem),
        )

    @_never_raise
    def problem_cleared(self, problem: Problem) -> None:
        """A problem of the previous snapshot that is gone."""
        self._emit(
            MESSAGE_ID_PROBLEM_CLEARED,
            LOG_INFO,
            f"Problem cleared: {problem.code}" + (f" ({problem.subject})" if problem.subject else ""),
            self._problem_fields(problem),
        )

    @_never_raise
    def write_attempt(self, **fields: Any) -> None:
        """Audit record of a write attempt (SetDefaultEntry, ...): notice on success, warning otherwise.

        Refused attempts are rate-limited per caller uid other than 0 (REFUSED_INTERVAL): a
        flood of refused calls cannot flood the journal; the callers' answers are not limited.
        """
        result = _text(fields.get("result", ""))
        now = self._clock()
        uid = _text(fields.get("caller_uid", ""))
        # Counted per uid and result: a record stands for itself and suppressed calls of its own result.
        key = f"{uid} {result}"
        self._flush_refused(now, keep=key if result in WRITE_STOPPED else None)
        # Root is not limited: it can write to the journal directly anyway.
        if result in WRITE_STOPPED and uid != "0":
            last = self._refused.get(key)
            if last is not None and now - last[0] < REFUSED_INTERVAL:
                self._refused[key] = (last[0], last[1] + 1, dict(fields))
                return
            suppressed = last[1] if last is not None else 0
            self._refused[key] = (now, 0, dict(fields))
            fields = dict(fields, suppressed=suppressed)
        self._attempt_record(fields)

    def _attempt_record(self, fields: dict[str, Any]) -> None:
        result = _text(fields.get("result", ""))
        error = _text(fields.get("error", ""))
        ok = not error and result in ("", WRITE_GRANTED)
        method = _text(fields.get("method", "")) or "write"
        who = f"uid {_text(fields.get('caller_uid', '?'))}"
        if fields.get("caller_unit"):
            who += f" ({fields['caller_unit']})"
        target = _text(fields.get("entry") or fields.get("deployment") or "")
        message = f"{method}({target}) by {who}: " + (
            "succeeded" if ok else f"{result if result in ('failed', 'invalid') else 'refused'}: {error or result}"
        )
        if fields.get("suppressed"):
            message += f" ({fields['suppressed']} more refused or invalid calls of this uid not journaled one by one)"
        self._emit(
            MESSAGE_ID_WRITE_ATTEMPT,
            LOG_NOTICE if ok else LOG_WARNING,
            message,
            [(field_name(k), v) for k, v in fields.items()],
        )

    def _flush_refused(self, now: float | None, keep: str | None = None) -> None:
        """Journal the count of refusals suppressed in windows that are over (all of them when NOW is None).

        KEEP: the "uid result" being refused right now; its count goes into that record instead.
        """
        for key, (since, suppressed, last) in list(self._refused.items()):
            if key == keep or (now is not None and now - since < REFUSED_INTERVAL):
                continue
            del self._refused[key]
            if suppressed:
                # The last suppressed attempt is journaled, late, with the count of the others:
                # every record stands for itself plus OSTREEWATCH_SUPPRESSED refusals before it.
                self._attempt_record(dict(last, suppressed=suppressed - 1))

    @_never_raise
    def stopping(self, reason: str = "") -> None:
        """The daemon is exiting (pending counts of suppressed refusals are journaled first)."""
        self._flush_refused(None)
        self._emit(
            MESSAGE_ID_STOPPING,
            LOG_INFO,
            "ostreewatch stopping" + (f": {reason}" if reason else ""),
            [("OSTREEWATCH_REASON", reason)] if reason else [],
        )

    @_never_raise
    def bus_connected(self, address: str = "", unique_name: str = "") -> None:
        """The daemon owns its name on the bus (first time or after a reconnection)."""
        self._emit(
            MESSAGE_ID_BUS_CONNECTED,
            LOG_INFO,
            f"Connected to the bus {address}".rstrip() + (f" as {unique_name}" if unique_name else ""),
            [("OSTREEWATCH_BUS_ADDRESS", address), ("OSTREEWATCH_BUS_UNIQUE_NAME", unique_name)],
        )

    @_never_raise
    def bus_lost(self, address: str = "", reason: str = "", shutting_down: bool = False) -> None:
        """The bus connection went away; the daemon keeps watching and will reconnect.

        While the system shuts down the bus stops first, as expected: info with
        OSTREEWATCH_SHUTTING_DOWN=1 then, a warning otherwise.
        """
        fields: list[Field] = [("OSTREEWATCH_BUS_ADDRESS", address), ("OSTREEWATCH_REASON", reason)]
        if shutting_down:
            fields.append(("OSTREEWATCH_SHUTTING_DOWN", "1"))
        self._emit(
            MESSAGE_ID_BUS_LOST,
            LOG_INFO if shutting_down else LOG_WARNING,
            "Lost the bus connection"
            + (f": {reason}" if reason else "")
            + (", the system is shutting down" if shutting_down else ", will reconnect"),
            fields,
        )

    @_never_raise
    def boot_outcome(self, record: BootRecord) -> None:
        """How this boot turned out (once per boot; docs/boot-outcome.md): every LastBoot key as a field."""
        if record.outcome == "fallback" or record.finalize_failed:
            priority = LOG_WARNING
        elif record.outcome == "other-entry":
            priority = LOG_NOTICE
        else:
            priority = LOG_INFO
        self._emit(
            MESSAGE_ID_BOOT_OUTCOME,
            priority,
            f"Boot {record.boot_id}: {record.outcome}. {record.reason}",
            [
                ("OSTREEWATCH_BOOT_OUTCOME", record.outcome),
                ("OSTREEWATCH_BOOT_ID", record.boot_id),
                ("OSTREEWATCH_PREVIOUS_BOOT_ID", record.previous_boot_id),
                ("OSTREEWATCH_EXPECTED_ENTRY", record.expected_entry),
                ("OSTREEWATCH_EXPECTED_DEPLOYMENT", record.expected_deployment),
                ("OSTREEWATCH_BOOTED_ENTRY", record.booted_entry),
                ("OSTREEWATCH_BOOTED_DEPLOYMENT", record.booted_deployment),
                ("OSTREEWATCH_REASON", record.reason),
                ("OSTREEWATCH_FINALIZE_FAILED", record.finalize_failed),
                ("OSTREEWATCH_FINALIZE_ERROR", record.finalize_error),
                ("OSTREEWATCH_BOOT_TIMESTAMP", record.timestamp),
            ],
        )

    @_never_raise
    def log(self, priority: int, message: str, **fields: Any) -> None:
        """A plain message (no MESSAGE_ID); extra fields become OSTREEWATCH_*."""
        self._emit(None, priority, message, [(field_name(k), v) for k, v in fields.items()])

    # --- plumbing --------------------------------------------------------------

    @staticmethod
    def _problem_fields(problem: Problem) -> list[Field]:
        return [
            ("OSTREEWATCH_PROBLEM_CODE", problem.code),
            ("OSTREEWATCH_PROBLEM_SUBJECT", problem.subject),
            ("OSTREEWATCH_PROBLEM_MESSAGE", problem.message),
        ]

    def _lines(self, message_id: str | None, priority: int, message: str, fields: Sequence[Field]) -> list[str]:
        lines = [
            "MESSAGE=" + message,
            f"PRIORITY={int(priority)}",
            "SYSLOG_IDENTIFIER=" + self.identifier,
        ]
        if message_id:
            lines.append("MESSAGE_ID=" + message_id)
        lines += [f"{key}={_text(value)}" for key, value in fields]
        return lines

    def _emit(self, message_id: str | None, priority: int, message: str, fields: Sequence[Field]) -> None:
        try:
            lines = self._lines(message_id, priority, message, fields)
        except Exception as exc:  # noqa: BLE001 - a field whose str() fails must not lose the record
            lines = [
                "MESSAGE=" + str(message),
                f"PRIORITY={LOG_ERR}",
                "SYSLOG_IDENTIFIER=" + self.identifier,
                f"OSTREEWATCH_FORMAT_ERROR={exc.__class__.__name__}",
            ]
        # systemd-python is silent when the socket is missing: check first so the
        # record is not lost; a stale socket raises ConnectionRefusedError instead.
        if _sd_journal is not None and os.path.exists(self.socket_path):
            try:
                _sd_journal.sendv(*lines)
                return
            except Exception as exc:  # noqa: BLE001 - OSError mostly; never let logging kill the daemon
                lines.append(f"OSTREEWATCH_JOURNAL_ERROR={exc.__class__.__name__}")
        self._to_stderr(lines)

    def _to_stderr(self, lines: Sequence[str]) -> None:
        """One line: `identifier: KEY=value ...`, values quoted when not plain."""
        parts = []
        for line in lines:
            key, _, value = line.partition("=")
            if not _PLAIN_RE.fullmatch(value):
                value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
            parts.append(f"{key}={value}")
        try:
            stream = self._stream if self._stream is not None else sys.stderr
            stream.write(f"{self.identifier}: " + " ".join(parts) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - stderr closed or full: nothing left to tell
            pass
