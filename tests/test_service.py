"""service.Manager on a real system-type dbus-daemon, read by busctl, gdbus, dbus-send and dbus-next.

The Manager runs in this process (on an asyncio loop) with a hand-built
snapshot, so these tests prove the D-Bus edge alone; tests/test_daemon*.py
prove the whole daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from ostreewatch import authz, errors, model, service
from ostreewatch import changes as changes_mod
from ostreewatch.busnames import INTERFACE, OBJECT_PATH
from ostreewatch.client import Client
from tests.fixtures.published import ENT_2, GDBUS_CALL, SNAP1, SNAP2, M, busctl, dbus_send, run, setpriv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XML = os.path.join(REPO, "dbus", "org.ostreewatch1.Manager.xml")
NOBODY = setpriv(65534)


# --- buses: a real system-type dbus-daemon with the project's policy (tests/fixtures/bus.py) -----------------


@pytest.fixture
def bus(system_bus: Any) -> Any:
    return system_bus


@pytest.fixture
def relaxed_bus(make_bus: Any) -> Any:
    return make_bus(relaxed_policy=True)


# --- running the Manager in this process ------------------------------------------------


class Served:
    """A Manager exported on a bus, owning org.ostreewatch1, with a counting Reload hook."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.reloads = 0
        self.manager = service.Manager(SNAP1, 7, "9.9.9", reload=self._reload, set_entry=None)
        self.bus: Any = None

    async def _reload(self, gate: authz.Gate) -> int:
        # The daemon's decision (ostreewatchd passes the same through BootWriter.reload).
        await gate.check({})
        self.reloads += 1
        return self.manager.generation

    async def __aenter__(self) -> Served:
        self.bus = await service.connect(self.address)
        self.manager.attach(self.bus)
        assert await service.own_name(self.bus)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.bus.disconnect()


# --- introspection == the XML -------------------------------------------------------------


def _members(iface: ET.Element) -> dict[tuple[str, str], Any]:
    """Members of an <interface> as comparable data: args (name, type, direction) and annotations."""
    out: dict[tuple[str, str], Any] = {}
    for child in iface:
        if child.tag not in ("method", "signal", "property"):
            continue
        args = [
            (a.get("name"), a.get("type"), a.get("direction", "in" if child.tag == "method" else "out"))
            for a in child.findall("arg")
        ]
        annotations = sorted((a.get("name"), a.get("value")) for a in child.findall("annotation"))
        out[(child.tag, child.get("name"))] = (args, child.get("type"), child.get("access"), annotations)
    return out


def _interface(xml_text: str) -> ET.Element:
    root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", xml_text, flags=re.S))
    found = [i for i in root.findall("interface") if i.get("name") == "org.ostreewatch1.Manager"]
    assert len(found) == 1
    return found[0]


def test_introspection_equals_the_xml(bus: Any) -> None:
    with open(XML) as f:
        want = _members(_interface(f.read()))

    async def main() -> str:
        async with Served(bus.address):
            rc, out, err = await run(busctl("introspect", "--xml-interface", *M[:2]), bus.env())
            assert rc == 0, err
            return out

    got = _members(_interface(asyncio.run(main())))
    assert got == want
    # and the properties dbus-next really serves have the XML's types
    served = {p.name: p.signature for p in service.Manager(SNAP1, 1, "v", reload=None).introspect().properties}
    assert served == {name: t for (kind, name), (_, t, _, _) in want.items() if kind == "property"}
    assert all(access == "read" for (kind, _), (_, _, access, _) in want.items() if kind == "property")


def test_every_member_of_the_xml_has_a_doc_comment() -> None:
    text = pathlib.Path(XML).read_text()
    for kind, name in re.findall(r'<(method|signal|property) name="(\w+)"', text):
        before = text[: text.index(f'<{kind} name="{name}"')].rstrip()
        assert before.endswith("-->"), f"{kind} {name} has no doc comment"


# --- reading the state with every client ------------------------------------------------------


def test_busctl_gdbus_dbus_send_read_the_state(bus: Any) -> None:
    async def main() -> None:
        async with Served(bus.address):
            env = bus.env()
            rc, out, err = await run(busctl("--json=short", "get-property", *M, "DefaultEntry"), env)
            assert rc == 0, err
            assert json.loads(out) == {"type": "s", "data": "ostree-2"}
            rc, out, err = await run(busctl("--json=short", "get-property", *M, "Deployments"), env)
            deps = json.loads(out)["data"]
            assert [d["id"]["data"] for d in deps] == ["fedora-aaaa.0", "fedora-bbbb.0"]
            assert deps[0]["serial"] == {"type": "i", "data": 0}
            assert deps[0]["booted"] == {"type": "b", "data": True}
            rc, out, err = await run(busctl("--json=short", "get-property", *M, "Generation"), env)
            assert json.loads(out) == {"type": "t", "data": 7}
            rc, out, err = await run(
                [
                    *GDBUS_CALL,
                    "org.freedesktop.DBus.Properties.GetAll",
                    M[2],
                ],
                env,
            )
            assert rc == 0, err
            assert "'Version': <'9.9.9'>" in out and "'tries_left': <3>" in out
            assert "'initrd': <['/ostree/fedora-b1/initramfs.img', '/x.img']>" in out
            assert "'mount_id': <uint32 104>" in out
            rc, out, err = await run(
                [
                    *dbus_send(),
                    "org.freedesktop.DBus.Properties.Get",
                    "string:" + M[2],
                    "string:BootedDeployment",
                ],
                env,
            )
            assert rc == 0, err
            assert 'variant       string "fedora-aaaa.0"' in out

    asyncio.run(main())


def test_values_have_the_contract_types() -> None:
    values = service.snapshot_values(SNAP1)
    for name, sig in model.PROPERTY_SIGNATURES.items():
        if sig == "aa{sv}":
            keys = model.key_signatures(name)
            for item in values[name]:
                assert {k: v.signature for k, v in item.items()} == keys
    assert service.unwrap(values["BootEntries"])[0]["initrd"] == list(ENT_2.initrd)


def test_nobody_reads_every_property_and_is_refused_reload_by_the_daemon(bus: Any) -> None:
    # The bus policy lets everyone call the Manager's methods; the daemon refuses (no polkitd on this bus).
    async def main() -> None:
        async with Served(bus.address) as served:
            env = bus.env()
            rc, out, err = await run(
                NOBODY
                + [
                    *GDBUS_CALL,
                    "org.freedesktop.DBus.Properties.GetAll",
                    M[2],
                ],
                env,
            )
            assert rc == 0, err
            for name in service.PROPERTIES:
                assert f"'{name}':" in out
            rc, out, err = await run(
                NOBODY + [*GDBUS_CALL, M[2] + ".Reload"],
                env,
            )
            assert rc != 0
            assert "org.freedesktop.DBus.Error.AccessDenied" in err, err
            assert "needs root or the polkit action org.ostreewatch1.reload" in err, err
            assert "Rejected send message" not in err  # not the bus policy
            assert served.reloads == 0
            # Properties.Set stays stopped by the bus policy itself
            rc, out, err = await run(
                NOBODY
                + [
                    *GDBUS_CALL,
                    "org.freedesktop.DBus.Properties.Set",
                    M[2],
                    "DefaultEntry",
                    "<'x'>",
                ],
                env,
            )
            assert rc != 0 and "AccessDenied" in err

    asyncio.run(main())


# --- the daemon's own checks and error names ------------------------------------------------


def test_daemon_refuses_nobody_when_the_policy_is_relaxed(relaxed_bus: Any) -> None:
    async def main() -> None:
        async with Served(relaxed_bus.address) as served:
            env = relaxed_bus.env()
            rc, out, err = await run(
                NOBODY + [*GDBUS_CALL, M[2] + ".Reload"],
                env,
            )
            assert rc != 0
            assert "org.freedesktop.DBus.Error.AccessDenied" in err
            assert "Traceback" not in err
            assert served.reloads == 0
            rc, out, err = await run(
                NOBODY
                + [
                    *GDBUS_CALL,
                    M[2] + ".SetDefaultEntry",
                    "ostree-1",
                ],
                env,
            )
            # this Manager has no boot writer (which makes the decision for writes): nothing to authorize
            assert "org.ostreewatch1.Error.NotSupported" in err
            # root passes the daemon's check
            rc, out, err = await run(busctl("call", *M, "Reload"), env)
            assert rc == 0, err
            assert out.strip() == "t 7"
            assert served.reloads == 1

    asyncio.run(main())


def test_errors_are_named_never_tracebacks(bus: Any) -> None:
    async def failing(*args: Any) -> int:
        raise RuntimeError("boom with secret detail")

    async def main() -> None:
        async with Served(bus.address) as served:
            env = bus.env()

            async def gdbus(method: str, *args: str) -> str:
                rc, out, err = await run([*GDBUS_CALL, method, *args], env)
                assert rc != 0
                assert "Traceback" not in err and 'File "' not in err
                return err

            assert "org.freedesktop.DBus.Error.InvalidArgs" in await gdbus(M[2] + ".Reload", "x")
            assert "org.freedesktop.DBus.Error.InvalidArgs" in await gdbus(M[2] + ".SetNextEntry", "1", "2")
            assert "org.freedesktop.DBus.Error.UnknownMethod" in await gdbus(M[2] + ".Explode")
            # root, no boot writer in this Manager: a named NotSupported
            assert "org.ostreewatch1.Error.NotSupported" in await gdbus(M[2] + ".SetDefaultEntry", "ostree-1")
            err = await gdbus("org.freedesktop.DBus.Properties.Set", M[2], "DefaultEntry", "<'x'>")
            assert "org.freedesktop.DBus.Error" in err
            served.manager._reload = failing
            err = await gdbus(M[2] + ".Reload")
            assert "org.ostreewatch1.Error.Failed" in err and "secret" not in err

    asyncio.run(main())


def test_set_entry_hook_gets_the_caller(relaxed_bus: Any) -> None:
    calls: list[tuple[str, str, model.Caller]] = []

    async def set_entry(which: str, entry_id: str, gate: authz.Gate) -> None:
        calls.append((which, entry_id, gate.caller))
        if entry_id == "nope":
            raise errors.NoSuchEntry("no entry 'nope'")
        await gate.check({"entry": entry_id})

    async def main() -> None:
        async with Served(relaxed_bus.address) as served:
            served.manager._set_entry = set_entry
            env = relaxed_bus.env()
            rc, out, err = await run(busctl("call", *M, "SetNextEntry", "s", "ostree-1"), env)
            assert rc == 0, err
            rc, out, err = await run(NOBODY + busctl("call", *M, "SetDefaultEntry", "s", "nope"), env)
            assert rc != 0 and "No such entry" not in out
            rc, out, err = await run(
                [
                    *GDBUS_CALL,
                    M[2] + ".SetDefaultEntry",
                    "nope",
                ],
                env,
            )
            assert "org.ostreewatch1.Error.NoSuchEntry" in err

    asyncio.run(main())
    assert [(w, e, c.uid) for w, e, c in calls] == [
        ("next", "ostree-1", 0),
        ("default", "nope", 65534),
        ("default", "nope", 0),
    ]
    assert all(c.pid > 0 and c.bus_name.startswith(":") for _, _, c in calls)


# --- signals ------------------------------------------------------------------------------------


def test_publish_emits_properties_changed_once_and_typed_signals(bus: Any) -> None:
    async def main() -> tuple[list[tuple[str, dict[str, Any]]], str]:
        async with Served(bus.address) as served:
            client = await Client.connect(bus.address)
            got: list[tuple[str, dict[str, Any]]] = []
            await client.subscribe(lambda name, args: got.append((name, args)))
            mon = await asyncio.create_subprocess_exec(
                *busctl("monitor", "--json=short", M[0]),
                env=bus.env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(0.5)  # let busctl monitor become a monitor
            before = await client.get_all()
            assert before["DefaultEntry"] == SNAP1.DefaultEntry
            ch = changes_mod.diff(SNAP1, SNAP2)
            served.manager.publish(SNAP2, 8, ch)
            after = await client.get_all()  # GetAll is served from a cache: it must follow publish()
            assert after["DefaultEntry"] == "extra" and after["Generation"] == 8
            assert service.snapshot_from_plain(after) == SNAP2
            for _ in range(100):
                if len(got) >= 5:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything extra would arrive now
            rc, out, err = await run(busctl("--json=short", "get-property", *M, "DefaultEntry"), bus.env())
            assert json.loads(out)["data"] == "extra"
            mon.terminate()
            mon_out, _ = await mon.communicate()
            client.close()
            return got, mon_out.decode()

    got, mon_out = asyncio.run(main())
    names = [name for name, _ in got]
    assert names == [
        "PropertiesChanged",
        "DeploymentsChanged",
        "BootEntriesChanged",
        "DefaultEntryChanged",
        "MountsChanged",
    ]
    changed = got[0][1]["changed"]
    assert set(changed) == {
        "RollbackDeployment",
        "DefaultEntry",
        "Deployments",
        "BootEntries",
        "Mounts",
        "Problems",
        "Generation",
    }
    assert changed["Generation"] == 8 and changed["DefaultEntry"] == "extra"
    assert changed["Problems"] == [
        {"code": "saved-entry-missing", "message": "saved_entry names no entry", "subject": "ostree-9"}
    ]
    assert got[1][1] == {"added": [], "removed": ["fedora-bbbb.0"]}
    assert got[2][1] == {"added": ["extra"], "removed": ["ostree-1"], "modified": []}
    assert got[3][1] == {"previous": "ostree-2", "current": "extra"}
    assert got[4][1] == {"mount_points": ["/usr"]}
    members = [json.loads(line).get("member") for line in mon_out.splitlines() if line.strip()]
    signals = [
        m
        for m in members
        if m
        in ("PropertiesChanged", "DeploymentsChanged", "BootEntriesChanged", "DefaultEntryChanged", "MountsChanged")
    ]
    assert signals == names


def test_nobody_receives_signals(bus: Any) -> None:
    async def main() -> str:
        async with Served(bus.address) as served:
            mon = await asyncio.create_subprocess_exec(
                *NOBODY,
                "gdbus",
                "monitor",
                "--system",
                "--dest",
                M[0],
                env=bus.env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert mon.stdout is not None
            await asyncio.wait_for(mon.stdout.readline(), 20)  # "Monitoring signals from ..."
            await asyncio.sleep(0.3)
            served.manager.publish(SNAP2, 8, changes_mod.diff(SNAP1, SNAP2))
            lines = []
            while not any("MountsChanged" in line for line in lines):
                lines.append((await asyncio.wait_for(mon.stdout.readline(), 20)).decode())
            mon.terminate()
            await mon.wait()
            return "".join(lines)

    out = asyncio.run(main())
    assert "org.freedesktop.DBus.Properties.PropertiesChanged" in out
    assert "org.ostreewatch1.Manager.DefaultEntryChanged ('ostree-2', 'extra')" in out


def test_getall_values_round_trip_to_the_snapshot() -> None:
    for snap in (SNAP1, SNAP2, model.Snapshot()):
        assert service.snapshot_from_plain(service.unwrap(service.snapshot_values(snap))) == snap


def test_properties_errors_are_named_and_short(bus: Any) -> None:
    long_name = "X" * (1 << 20)

    async def main() -> None:
        async with Served(bus.address):
            client = await Client.connect(bus.address)
            try:
                for body, name in (
                    ([M[2], long_name], "UnknownProperty"),
                    ([long_name, "Version"], "UnknownInterface"),
                ):
                    reply = await client.bus.call(
                        service.Message(
                            destination=M[0],
                            path=M[1],
                            interface="org.freedesktop.DBus.Properties",
                            member="Get",
                            signature="ss",
                            body=body,
                        )
                    )
                    assert reply.error_name == "org.freedesktop.DBus.Error." + name
                    assert len(reply.body[0]) < 200
                reply = await client.bus.call(
                    service.Message(
                        destination=M[0],
                        path=M[1],
                        interface="org.freedesktop.DBus.Properties",
                        member="Set",
                        signature="ssv",
                        body=[M[2], "DefaultEntry", service.Variant("s", "x")],
                    )
                )
                assert reply.error_name == "org.freedesktop.DBus.Error.PropertyReadOnly"
                assert (await client.get_all())["DefaultEntry"] == "ostree-2"
            finally:
                client.close()

    asyncio.run(main())


def test_subscribe_takes_signals_only_from_the_daemon(bus: Any) -> None:
    """Anyone may send a signal to a connection's unique name: a forged one (gdbus emit, another
    connection, malformed or with a terminal escape) is dropped; the daemon's own still arrives."""

    async def main() -> list[tuple[str, dict[str, Any]]]:
        async with Served(bus.address) as served:
            client = await Client.connect(bus.address)
            got: list[tuple[str, dict[str, Any]]] = []
            await client.subscribe(lambda name, args: got.append((name, args)))
            me = client.bus.unique_name
            for signal, args in (
                (f"{INTERFACE}.DefaultEntryChanged", ["'ostree-FAKE'", "'\x1b[2Jevil'"]),
                ("org.freedesktop.DBus.Properties.PropertiesChanged", []),
            ):
                rc, out, err = await run(
                    [
                        "gdbus",
                        "emit",
                        "--address",
                        bus.address,
                        "--dest",
                        me,
                        "--object-path",
                        OBJECT_PATH,
                        "--signal",
                        signal,
                        *args,
                    ],
                    bus.env(),
                )
                assert rc == 0, err
            served.manager.publish(SNAP2, 9, changes_mod.diff(SNAP1, SNAP2))
            for _ in range(100):
                if any(name == "DefaultEntryChanged" for name, _ in got):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            client.close()
            return got

    got = asyncio.run(main())
    changed = [args for name, args in got if name == "DefaultEntryChanged"]
    assert changed == [{"previous": SNAP1.DefaultEntry, "current": SNAP2.DefaultEntry}]
    assert all("FAKE" not in json.dumps(args) for _, args in got)
