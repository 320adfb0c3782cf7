"""GetAll's reply is marshalled once per change: the bytes must be dbus-next's own, byte for byte.

service.PremarshalledReply owns the header half of dbus-next's Message._marshall; this
test fails when the pinned dbus-next changes what it relies on.
"""

from __future__ import annotations

import asyncio
import configparser
import os
from importlib import metadata

from dbus_next import Message, MessageType, Variant

from ostreewatch import sample, service, state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pinned_dbus_next() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    pins = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip().startswith("dbus-next")]
    assert len(pins) == 1 and "==" in pins[0], pins
    return pins[0].split("==", 1)[1]


def test_dbus_next_is_the_pinned_version() -> None:
    assert metadata.version("dbus-next") == _pinned_dbus_next()


def _call(serial: int, sender: str) -> Message:
    call = Message(
        destination=service.BUS_NAME,
        path=service.OBJECT_PATH,
        interface=service.PROPERTIES_IFACE,
        member="GetAll",
        signature="s",
        body=[service.INTERFACE],
        serial=serial,
    )
    call.sender = sender
    return call


def test_premarshalled_reply_is_byte_identical_to_dbus_next() -> None:
    async def build() -> service.Manager:
        async def reload() -> int:
            return 1

        return service.Manager(state.read_snapshot(sample.paths_for()), 7, "test", reload=reload)

    manager = asyncio.run(build())
    for serial, sender in ((1, ":1.2"), (4242, ":1.99999"), (2**32 - 1, ":1.7")):
        call = _call(serial, sender)
        ours = service.PremarshalledReply(call, "a{sv}", manager._all_body())
        theirs = Message.new_method_return(call, "a{sv}", [manager._all_variants()])
        ours.serial = theirs.serial = 17
        assert ours.message_type == theirs.message_type == MessageType.METHOD_RETURN
        assert bytes(ours._marshall()) == bytes(theirs._marshall())


def test_the_cached_body_follows_a_published_change() -> None:
    async def run() -> None:
        async def reload() -> int:
            return 1

        snap = state.read_snapshot(sample.paths_for())
        manager = service.Manager(snap, 1, "test", reload=reload)
        before = manager._all_body()

        class _Changes:
            changed_properties = ("DefaultEntry",)
            deployments_added = deployments_removed = entries_added = entries_removed = entries_modified = ()
            default_entry = None
            mount_points_changed = ()

        manager.publish(snap, 2, _Changes())
        after = manager._all_body()
        assert after != before  # Generation 1 -> 2 is in the body
        body = Message.new_method_return(
            _call(1, ":1.1"), "a{sv}", [{k: Variant(v.signature, v.value) for k, v in manager._all_variants().items()}]
        )
        assert (
            bytes(service.PremarshalledReply(_call(1, ":1.1"), "a{sv}", after)._marshall())[-len(after) :]
            == bytes(body._marshall())[-len(after) :]
        )

    asyncio.run(run())
