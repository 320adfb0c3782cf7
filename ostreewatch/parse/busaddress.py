"""D-Bus server addresses ("unix:path=/run/dbus/system_bus_socket;tcp:host=..."), as the D-Bus specification has them.

A pure parser, so that ostreewatchd can refuse a bad --bus before READY=1
without importing the D-Bus library (which it loads only after READY=1).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from ostreewatch.errors import BusAddressError

# The specification's "optionally-escaped bytes"; everything else must be %XX.
_VALUE = re.compile(r"(?:[-0-9A-Za-z_/.\\*]|%[0-9A-Fa-f]{2})*")


def parse_address(text: str) -> list[tuple[str, dict[str, str]]]:
    """[(transport, {key: value})] for each ';'-separated address; BusAddressError when malformed or empty."""
    out: list[tuple[str, dict[str, str]]] = []
    for address in filter(None, text.split(";")):
        transport, colon, options = address.partition(":")
        if not colon or not transport:
            raise BusAddressError(f"{address!r} has no transport (such as unix:)")
        values: dict[str, str] = {}
        for pair in filter(None, options.split(",")):
            key, equals, value = pair.partition("=")
            if not equals or not key:
                raise BusAddressError(f"option {pair!r} of {transport}: is not key=value")
            if not _VALUE.fullmatch(value):
                raise BusAddressError(f"option {key} of {transport}: has characters that must be %-escaped")
            values[key] = unquote(value)
        out.append((transport, values))
    if not out:
        raise BusAddressError("no address")
    return out
