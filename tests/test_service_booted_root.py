"""The a{sv} property BootedRoot and the s property DefaultEntrySource on a real system-type dbus-daemon:
Get (busctl, dbus-send), GetAll (gdbus, dbus-next) and PropertiesChanged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from ostreewatch import changes as changes_mod
from ostreewatch import model, service
from ostreewatch.client import Client
from tests.fixtures.published import GDBUS_CALL, SNAP1, M, busctl, dbus_send, run

ROOT1 = model.booted_root_items(
    {
        "composefs": True,
        "composefs_verity": False,
        "composefs_signed": "ed25519:K",
        "sysroot_ro": True,
        "transient_etc": "/run/ostree/etc",
        "backing_device": 2**40 + 3,
        "backing_inode": 2**63 + 5,
    }
)
SNAP_A = dataclasses.replace(SNAP1, BootedRoot=ROOT1, DefaultEntrySource="first-entry")
SNAP_B = dataclasses.replace(
    SNAP_A, BootedRoot=model.booted_root_items({"root_transient": False}), DefaultEntrySource="greenboot-fallback"
)


def test_values_round_trip() -> None:
    values = service.snapshot_values(SNAP_A)
    assert {k: v.signature for k, v in values["BootedRoot"].items()} == {k: model.BOOTED_ROOT_KEYS[k] for k, _ in ROOT1}
    for snap in (SNAP_A, SNAP_B, dataclasses.replace(SNAP_A, BootedRoot=())):
        assert model.snapshot_from_plain(service.unwrap(service.snapshot_values(snap))) == snap


def test_get_getall_and_properties_changed(system_bus: Any) -> None:
    async def main() -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], list[str]]:
        manager = service.Manager(SNAP_A, 1, "9.9.9", reload=lambda: asyncio.sleep(0, 1))
        bus = await service.connect(system_bus.address)
        manager.attach(bus)
        assert await service.own_name(bus)
        env = system_bus.env()
        outs: list[str] = []
        try:
            rc, out, err = await run(busctl("--json=short", "get-property", *M, "BootedRoot"), env)
            assert rc == 0, err
            got = json.loads(out)
            assert got["type"] == "a{sv}"
            assert got["data"]["composefs"] == {"type": "b", "data": True}
            assert got["data"]["composefs_signed"] == {"type": "s", "data": "ed25519:K"}
            assert got["data"]["backing_inode"] == {"type": "t", "data": 2**63 + 5}
            assert set(got["data"]) == {k for k, _ in ROOT1}
            rc, out, err = await run(busctl("get-property", *M, "DefaultEntrySource"), env)
            assert (rc, out.strip()) == (0, 's "first-entry"'), err
            rc, out, err = await run(
                [
                    *GDBUS_CALL,
                    "org.freedesktop.DBus.Properties.GetAll",
                    M[2],
                ],
                env,
            )
            assert rc == 0, err
            assert "'BootedRoot': <{'composefs': <true>," in out
            assert "'backing_device': <uint64 1099511627779>" in out
            rc, out, err = await run(
                [
                    *dbus_send(),
                    "org.freedesktop.DBus.Properties.Get",
                    "string:" + M[2],
                    "string:BootedRoot",
                ],
                env,
            )
            assert rc == 0 and 'string "sysroot_ro"' in out, err
            outs.append(out)
            client = await Client.connect(system_bus.address)
            all_props = await client.get_all()
            assert model.snapshot_from_plain(all_props) == SNAP_A
            got_signals: list[tuple[str, dict[str, Any]]] = []
            await client.subscribe(lambda name, args: got_signals.append((name, args)))
            manager.publish(SNAP_B, 2, changes_mod.diff(SNAP_A, SNAP_B))
            for _ in range(100):
                if got_signals:
                    break
                await asyncio.sleep(0.05)
            after = await client.get_all()
            client.close()
            return after, got_signals, outs
        finally:
            bus.disconnect()

    after, got, _ = asyncio.run(main())
    assert after["BootedRoot"] == {"root_transient": False}
    assert after["DefaultEntrySource"] == "greenboot-fallback"
    assert got[0][0] == "PropertiesChanged"
    changed = got[0][1]["changed"]
    assert set(changed) == {"BootedRoot", "DefaultEntrySource", "Generation"}
    assert changed["BootedRoot"] == {"root_transient": False}
