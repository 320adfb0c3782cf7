"""service.HANDLERS: one handler per method of dbus/org.ostreewatch1.Manager.xml, checked at import.

A method added to the XML without a handler (or a handler left for a removed
method) makes `import ostreewatch.service` fail, so it can never run as some
other method.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from ostreewatch import service

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XML = os.path.join(REPO, "dbus", "org.ostreewatch1.Manager.xml")


def xml_methods() -> set[str]:
    """The method names the interface file declares (read here, not through _interface.py)."""
    root = ET.parse(XML).getroot()
    return {m.get("name", "") for iface in root.iter("interface") for m in iface.iter("method")}


def test_handlers_are_the_xml_methods() -> None:
    assert set(service.HANDLERS) == xml_methods()


def test_each_method_has_its_own_handler() -> None:
    assert len(set(service.HANDLERS.values())) == len(service.HANDLERS)


def test_check_handlers_names_what_is_missing_and_what_is_extra() -> None:
    methods = dict(service.METHODS, Frobnicate=([], []))
    with pytest.raises(ImportError, match="methods without a handler: Frobnicate"):
        service.check_handlers(service.HANDLERS, methods)
    handlers = dict(service.HANDLERS)
    handlers["Gone"] = handlers["Reload"]
    with pytest.raises(ImportError, match="handlers without a method .*: Gone"):
        service.check_handlers(handlers, service.METHODS)


@pytest.mark.parametrize(
    "change",
    [
        "_interface.METHODS['Frobnicate'] = ([('id', 's')], [])",
        "del _interface.METHODS['SetNextEntry']",
    ],
)
def test_import_fails_when_the_interface_and_the_table_differ(change: str) -> None:
    """As a regenerated _interface.py with one method more (or less) would: the import itself fails."""
    code = f"from ostreewatch import _interface\n{change}\nimport ostreewatch.service\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "org.ostreewatch1.Manager" in r.stderr, r.stderr


def test_bus_address_is_read_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """busnames.bus_address: --bus system/session from the environment, else the address as given."""
    from ostreewatch import busnames

    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    assert busnames.bus_address("system") == "unix:path=/var/run/dbus/system_bus_socket"
    assert busnames.bus_address("session") == ""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:abstract=/tmp/x,guid=1")
    assert busnames.bus_address("session") == "unix:abstract=/tmp/x,guid=1"
    assert busnames.socket_path("session") is None
    assert busnames.socket_path("unix:path=/run/b;tcp:host=x") == "/run/b"
    for module in ("service", "daemon", "client", "cli"):
        with open(os.path.join(REPO, "ostreewatch", f"{module}.py")) as f:
            assert "def bus_address(spec" not in f.read(), module


def test_one_property_to_record_map() -> None:
    """model.RECORDS: every aa{sv} property of the interface, and service.py keeps no map of its own."""
    from ostreewatch import model

    assert set(model.RECORDS) == {n for n, sig in model.PROPERTY_SIGNATURES.items() if sig == "aa{sv}"}
    with open(os.path.join(REPO, "ostreewatch", "service.py")) as f:
        source = f.read()
    assert '"Deployments": model.Deployment' not in source and "_KEYS_OF" not in source
