"""Where the daemon is on the bus: its well-known name, object path and interface, and the bus itself.

Without dbus_next, so that the CLI, the daemon before READY=1, the tests and bench import
them cheaply; service.py re-exports the names (service.BUS_NAME, service.OBJECT_PATH,
service.INTERFACE). bus_address() is the one reading of --bus.
"""

from __future__ import annotations

import os

from ._interface import INTERFACE

BUS_NAME = "org.ostreewatch1"
OBJECT_PATH = "/org/ostreewatch1"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"

# The system bus's address when DBUS_SYSTEM_BUS_ADDRESS is unset (the D-Bus specification's default).
SYSTEM_BUS_DEFAULT = "unix:path=/var/run/dbus/system_bus_socket"


def bus_address(spec: str) -> str:
    """The D-Bus address --bus SPEC (system, session or an address) names; "" for a session bus with none."""
    if spec == "system":
        return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT
    if spec == "session":
        return os.environ.get("DBUS_SESSION_BUS_ADDRESS") or ""
    return spec


def socket_path(spec: str) -> str | None:
    """The unix socket file --bus SPEC resolves to; None when its first address is not a path (abstract, tcp)."""
    first = bus_address(spec).split(";")[0]
    if not first.startswith("unix:"):
        return None
    for kv in first[5:].split(","):
        key, _, value = kv.partition("=")
        if key == "path":
            return value
    return None


__all__ = ["BUS_NAME", "OBJECT_PATH", "INTERFACE", "PROPERTIES_IFACE", "bus_address", "socket_path"]
