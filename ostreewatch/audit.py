"""The audit of the write methods: one journal record per attempt, whatever happens.

record() starts the fields of an attempt (who called, what was asked); audited()
runs the attempt and writes the one record with its result, and turns any
unexpected failure into a named error. The result says how far the attempt got:
granted (done), refused (authorization refused, and only that), invalid (bad
arguments: refused before authorization was asked) or failed (any error after
authorization).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, Callable

from ostreewatch import authz, errors, model
from ostreewatch.journal import Journal

log = logging.getLogger("ostreewatch.audit")


def record(method: str, caller: model.Caller, snapshot: model.Snapshot, **extra: Any) -> dict[str, Any]:
    """The journal fields of one attempt, before it runs (the attempt fills in the rest)."""
    fields: dict[str, Any] = {
        "caller_uid": caller.uid,
        "caller_pid": caller.pid,
        "caller_bus_name": caller.bus_name,
        "caller_unit": caller.unit,
        "method": method,
        "entry": "",
        "deployment": "",
        "previous": "",
        "new": "",
        "bootloader": snapshot.Bootloader,
    }
    fields.update(extra)
    return fields


def outcome(error: errors.OstreewatchError, gate: authz.Gate) -> str:
    """The audit result of an attempt that ended in ERROR: refused, invalid or failed."""
    if isinstance(error, errors.NotAuthorized):
        return "refused"
    return "failed" if gate.granted_by is not None else "invalid"


class Audit:
    """Writes the one journal record of each attempt."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def audited(self, fields: dict[str, Any], gate: authz.Gate, job: Callable[[], Awaitable[Any]]) -> Any:
        """Run JOB (which asks GATE); one journal record whatever happens; every failure leaves as a named error."""
        method = fields["method"]
        try:
            result = await job()
        except errors.OstreewatchError as e:
            self.write(fields, outcome(e, gate), e.dbus_name)
            raise
        except Exception as e:  # an unexpected failure is still answered with a named error
            log.exception("%s failed", method)
            self.write(fields, "failed", errors.WriteFailed.dbus_name)
            raise errors.WriteFailed(f"{method} failed: {type(e).__name__}: {e}") from e
        self.write(fields, "granted", "")
        return result

    def write(self, fields: dict[str, Any], result: str, error: str) -> None:
        """The attempt's journal record (never raises: the audit must not turn a done write into an error)."""
        try:
            self._journal.write_attempt(**fields, result=result, error=error)
        except Exception:
            log.exception("cannot journal the write attempt")
