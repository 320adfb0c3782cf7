"""The dbus-next internals ostreewatch/_dbusnext.py relies on are the pinned dbus-next's, unchanged.

_dbusnext.py's module docstring lists them; this test holds the source of each
as dbus-next 0.2.3 (setup.cfg's pin) has it, so an upgrade that changes one of
them fails here, naming it, rather than in a soak test much later.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import os
import re
from typing import Any

import pytest
from dbus_next._private import constants

from ostreewatch import _dbusnext, service

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# "module:qualified name" -> sha256 (first 16 hex digits) of its source in dbus-next 0.2.3, and why it matters.
RELIED_ON = {
    # PremarshalledReply overrides it; the header half is copied from it
    "dbus_next.message:Message._marshall": "8d39376b6169de9e",
    # GetAll's cached body and PremarshalledReply's header
    "dbus_next._private.marshaller:Marshaller.__init__": "9115e4e93b4be7b2",
    "dbus_next._private.marshaller:Marshaller.marshall": "eac62b9fc9051501",
    "dbus_next._private.marshaller:Marshaller.align": "51b9df00f90ff00a",
    "dbus_next._private.constants:HeaderField": "afeea7989553c354",
    # _PatientWriter: the attributes it uses, the callback it replaces, and who calls _marshall
    "dbus_next.aio.message_bus:_MessageWriter.__init__": "10256a4b71bccb22",
    "dbus_next.aio.message_bus:_MessageWriter.write_callback": "a2329e095be25d00",
    "dbus_next.aio.message_bus:_MessageWriter.schedule_write": "156c97ca222f2304",
    "dbus_next.aio.message_bus:_future_set_result": "17d9895cccc40574",
    "dbus_next.aio.message_bus:_future_set_exception": "f0e8215ca977561d",
    # service.connect replaces bus._writer between MessageBus() and connect()
    "dbus_next.aio.message_bus:MessageBus.__init__": "91cdc2494ec0a1ee",
    "dbus_next.aio.message_bus:MessageBus._finalize": "fb8154aca0dfb33a",
    "dbus_next.message_bus:BaseMessageBus._finalize": "a75e53ea69175c89",
    # close_bus: disconnect() leaves the socket (bus._sock, made here) open
    "dbus_next.message_bus:BaseMessageBus._setup_socket": "006941ab1b888125",
    "dbus_next.message_bus:BaseMessageBus.disconnect": "02dd5364cec10f21",
    # Manager.introspection_xml: the other interfaces and child nodes of the path
    "dbus_next.message_bus:BaseMessageBus._introspect_export_path": "69d3d05b0bbb3116",
}


def _resolve(name: str) -> Any:
    module, qualname = name.split(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.unit
def test_every_relied_on_internal_is_unchanged() -> None:
    changed = {}
    for name, digest in RELIED_ON.items():
        try:
            source = inspect.getsource(_resolve(name))
        except AttributeError as e:
            changed[name] = f"gone ({e})"
            continue
        got = hashlib.sha256(source.encode()).hexdigest()[:16]
        if got != digest:
            changed[name] = got
    assert changed == {}, (
        "dbus-next changed what ostreewatch/_dbusnext.py relies on: review each against it, then update RELIED_ON"
    )


@pytest.mark.unit
def test_the_protocol_constants() -> None:
    assert ord("l") == constants.LITTLE_ENDIAN
    assert constants.PROTOCOL_VERSION == 1


def _private_names(module: str) -> set[str]:
    """The private dbus-next names ostreewatch/MODULE uses (after its docstring)."""
    with open(os.path.join(REPO, "ostreewatch", module)) as f:
        text = f.read()
    text = text[text.index('"""', 3) + 3 :]  # the code, after the module docstring
    used = set(re.findall(r"dbus_next\._private\.\w+", text))
    used |= set(re.findall(r"\b(?:_aio_bus|bus|Message|_MessageWriter)\.(_[a-z]\w*)", text))
    used |= {"_MessageWriter"} if "_MessageWriter" in text else set()
    used |= set(re.findall(r'getattr\(bus, "(_\w+)"', text))
    return used


@pytest.mark.unit
def test_every_private_name_used_is_listed_in_the_docstring() -> None:
    """A private dbus-next name used in _dbusnext.py is named in its docstring (and its digest kept here)."""
    doc = _dbusnext.__doc__ or ""
    used = _private_names("_dbusnext.py")
    assert used, "the scan found nothing: its patterns no longer match _dbusnext.py"
    missing = sorted(name for name in used if name not in doc)
    assert missing == []
    listed = " ".join(RELIED_ON)
    assert [
        name
        for name in used
        if name.startswith("_") and name.split(".")[-1] not in listed and name not in ("_sock", "_writer")
    ] == []


def test_the_service_and_the_client_use_no_private_name() -> None:
    """Every dbus-next workaround lives in _dbusnext.py: the service and the client use none directly."""
    assert _private_names("service.py") == set()
    assert _private_names("client.py") == set()


def test_the_patient_writer_replaces_dbus_next_s(system_bus: Any) -> None:
    """service.connect's bus writes through _PatientWriter, with the attributes it reads."""

    async def main() -> None:
        bus = await service.connect(system_bus.address)
        try:
            writer = bus._writer
            assert isinstance(writer, _dbusnext._PatientWriter)
            for attribute in ("bus", "sock", "loop", "fd", "messages", "buf", "offset", "unix_fds", "fut"):
                assert hasattr(writer, attribute), attribute
            assert bus._sock is not None
            reply = await bus.introspect("org.freedesktop.DBus", "/org/freedesktop/DBus")
            assert reply.interfaces
        finally:
            service.close_bus(bus)

    asyncio.run(main())
