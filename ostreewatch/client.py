"""A client of a running ostreewatchd (the CLI's, and the tests'): calls, properties, signals.

With service.py, the only modules importing dbus_next. It connects through
service.connect and service.close_bus, so the client shares the service's
patched writer and its real socket close, and it turns D-Bus error names back
into the project's error classes through errors.by_dbus_name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Callable

from dbus_next import Message, MessageFlag, MessageType
from dbus_next.aio import MessageBus

from . import errors, service
from .busnames import BUS_NAME, INTERFACE, OBJECT_PATH, PROPERTIES_IFACE
from .service import SIGNALS, unwrap

_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


class Client:
    """A client of a running ostreewatchd (used by the CLI)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, spec: str = "system") -> Client:
        try:
            return cls(await service.connect(spec))
        except Exception as e:  # noqa: BLE001 - OSError, dbus-next's AuthError, a bad address...: all mean no daemon
            raise errors.DaemonUnavailable(f"cannot connect to the {spec} bus: {e}") from None

    def close(self) -> None:
        service.close_bus(self.bus)

    async def _call(
        self,
        member: str,
        signature: str = "",
        body: Iterable[Any] = (),
        interface: str = INTERFACE,
        destination: str = BUS_NAME,
        path: str = OBJECT_PATH,
        interactive: bool = False,
    ) -> list[Any]:
        """The reply's body; an error reply raises its class (errors.by_dbus_name) with "NAME: text"."""
        flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
                flags=flags,
            )
        )
        assert reply is not None  # None only for a call flagged NO_REPLY_EXPECTED, which this never sends
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            raise errors.from_dbus(reply.error_name, str(text))
        values: list[Any] = reply.body
        return values

    async def _call_bus(self, member: str, signature: str, body: Iterable[Any]) -> list[Any]:
        """A call to the bus daemon itself."""
        return await self._call(member, signature, body, destination=_DBUS[0], path=_DBUS[1], interface=_DBUS[2])

    async def has_owner(self) -> bool:
        body = await self._call_bus("NameHasOwner", "s", [BUS_NAME])
        return bool(body[0])

    async def get_all(self) -> dict[str, Any]:
        """Every property, as plain values ({"Property": value})."""
        body = await self._call("GetAll", "s", [INTERFACE], interface=PROPERTIES_IFACE)
        values: dict[str, Any] = unwrap(body[0])
        return values

    async def reload(self) -> int:
        return int((await self._call("Reload"))[0])

    async def set_entry(self, which: str, entry_id: str, interactive: bool = False) -> None:
        await self._call(
            "SetDefaultEntry" if which == "default" else "SetNextEntry", "s", [entry_id], interactive=interactive
        )

    async def set_deployment(self, deployment_id: str, interactive: bool = False) -> str:
        """SetDefaultDeployment; the entry id that now boots the deployment."""
        return str((await self._call("SetDefaultDeployment", "s", [deployment_id], interactive=interactive))[0])

    async def subscribe(self, on_signal: Callable[[str, dict[str, Any]], None]) -> None:
        """Call on_signal(name, args) for every signal of the daemon, PropertiesChanged included.

        Only signals from the connection that owns the daemon's name, with the interface's
        signature, are taken: anyone on the bus may send a signal to this connection's
        unique name, whatever its match rules. The owner is followed through NameOwnerChanged.
        """
        owner: list[str] = [""]

        def handler(msg: Message) -> bool:
            if msg.message_type != MessageType.SIGNAL:
                return False
            if (
                msg.sender == _DBUS[0]
                and msg.member == "NameOwnerChanged"
                and msg.signature == "sss"
                and msg.body[0] == BUS_NAME
            ):
                owner[0] = msg.body[2]
                return False
            if msg.path != OBJECT_PATH or not owner[0] or msg.sender != owner[0]:
                return False
            if msg.interface == PROPERTIES_IFACE and msg.member == "PropertiesChanged":
                if msg.signature != "sa{sv}as" or msg.body[0] != INTERFACE:
                    return False
                on_signal("PropertiesChanged", {"changed": unwrap(msg.body[1]), "invalidated": list(msg.body[2])})
            elif msg.interface == INTERFACE and msg.member in SIGNALS:
                args = SIGNALS[msg.member]
                if msg.signature != "".join(sig for _, sig in args):
                    return False
                on_signal(msg.member, {name: unwrap(value) for (name, _), value in zip(args, msg.body)})
            return False

        self.bus.add_message_handler(handler)
        await self._call_bus(
            "AddMatch",
            "s",
            [f"type='signal',sender='{_DBUS[0]}',member='NameOwnerChanged',arg0='{BUS_NAME}'"],
        )
        # Not running yet (NameHasNoOwner): NameOwnerChanged names it when it comes.
        with contextlib.suppress(errors.OstreewatchError):
            owner[0] = owner[0] or str((await self._call_bus("GetNameOwner", "s", [BUS_NAME]))[0])
        for rule in (
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{INTERFACE}'",
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{PROPERTIES_IFACE}'",
        ):
            await self._call_bus("AddMatch", "s", [rule])
