"""Where the daemon is on the bus: its well-known name, object path and interface.

Without dbus_next, so that the CLI, the tests and bench import them cheaply;
service.py re-exports them (service.BUS_NAME, service.OBJECT_PATH, service.INTERFACE).
"""

from __future__ import annotations

from ._interface import INTERFACE

BUS_NAME = "org.ostreewatch1"
OBJECT_PATH = "/org/ostreewatch1"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"

__all__ = ["BUS_NAME", "OBJECT_PATH", "INTERFACE", "PROPERTIES_IFACE"]
