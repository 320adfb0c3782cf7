"""sd_notify as one datagram, and signals remembered before the event loop; cheap to import.

Imported before READY=1 (ostreewatch/daemon.py's pre-READY section), so only builtin modules:
`socket` and `signal` import `enum` (a few ms at every boot), `_socket` and `_signal` do not.
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

# Signals that arrived before the event loop took them over (daemon.main installs this early,
# so a SIGTERM during the first read stops the daemon right after READY=1 instead of killing it
# half-way, and a SIGHUP is not lost).
pending_signals: list[int] = []


def address() -> str | None:
    """$NOTIFY_SOCKET as a socket address (abstract for '@'), None when unset or not a unix socket."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or addr[0] not in "/@":
        return None
    return "\0" + addr[1:] if addr[0] == "@" else addr


def send(addr: str, data: bytes, *, blocking: bool, timeout: float = 30.0) -> None:
    """One datagram to ADDR; raises OSError (BlockingIOError on a full queue when not blocking)."""
    flags = _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC
    if not blocking:
        flags |= _socket.SOCK_NONBLOCK
    s = _socket.socket(_socket.AF_UNIX, flags)
    try:
        if blocking:
            s.settimeout(timeout)
        s.sendto(data, addr)
    finally:
        s.close()


def notify_before_loop(message: str) -> bool:
    """sd_notify before the event loop exists: blocking (bounded), as libsystemd sends; False without a socket."""
    addr = address()
    if addr is None:
        return False
    try:
        send(addr, message.encode(), blocking=True)
    except OSError as e:
        print(f"ostreewatchd: sd_notify {message[:40]!r} failed: {e}", file=sys.stderr)
        return False
    return True


def _remember(signum: int, frame: FrameType | None) -> None:
    pending_signals.append(signum)


def remember_signals() -> None:
    """Until the event loop installs its handlers: SIGTERM, SIGINT and SIGHUP are recorded, not acted on."""
    _signal: Any = __import__("_signal")  # no typeshed stub; `signal` would import enum
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        _signal.signal(getattr(_signal, name), _remember)
