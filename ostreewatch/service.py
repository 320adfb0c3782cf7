"""The D-Bus edge: the org.ostreewatch1.Manager object, and connecting to a bus.

With client.py, the only modules importing dbus_next. Properties are served by a
dbus-next ServiceInterface (read-only); method calls to the Manager and
Introspect of its path are intercepted with a message handler, because
dbus-next hides the caller from @method handlers and answers uncaught
exceptions with a Python traceback (docs/platform.md, dbus-next). Every error that leaves here is a named
D-Bus error. The members and their signatures come from
dbus/org.ostreewatch1.Manager.xml, through the generated _interface.py.

The dbus-next workarounds (the patient writer, the premarshalled GetAll reply, the
real socket close, the introspection of the rest of the path) are in _dbusnext.py:
this module uses no private dbus-next name.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable
from typing import Any, Callable

from dbus_next import Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.constants import NameFlag, RequestNameReply
from dbus_next.service import PropertyAccess, ServiceInterface, dbus_property

from . import _interface, authz, errors, model
from ._dbusnext import PremarshalledReply as PremarshalledReply
from ._dbusnext import close_bus as close_bus
from ._dbusnext import export_path_node, marshall_body, new_bus

# re-exported: service.BUS_NAME, service.OBJECT_PATH and service.INTERFACE stay importable
from .busnames import BUS_NAME as BUS_NAME
from .busnames import INTERFACE as INTERFACE
from .busnames import OBJECT_PATH as OBJECT_PATH
from .busnames import PROPERTIES_IFACE as PROPERTIES_IFACE
from .busnames import bus_address
from .changes import Changes

EMITS = "org.freedesktop.DBus.Property.EmitsChangedSignal"

UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
FAILED = errors.OstreewatchError.dbus_name

log = logging.getLogger("ostreewatch.service")

# The interface, as dbus/org.ostreewatch1.Manager.xml declares it (scripts/gen-interface.py writes _interface.py).
# method name -> (in args [(name, sig)], out args [(name, sig)])
METHODS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = _interface.METHODS
SIGNALS: dict[str, list[tuple[str, str]]] = _interface.SIGNALS
PROPERTIES: dict[str, str] = _interface.PROPERTIES
# Version never changes while the daemon runs ("const"); every other property is sent with its value.
EMITS_CHANGED: dict[str, str] = _interface.EMITS_CHANGED

# Hooks the daemon gives the service. Each gets the call's authz.Gate (the caller, and an
# AskPolkit for this very call) and must ask it: the Manager answers no call whose gate was not asked.
ReloadHook = Callable[[authz.Gate], Awaitable[int]]
SetEntryHook = Callable[[str, str, authz.Gate], Awaitable[None]]
SetDeploymentHook = Callable[[str, authz.Gate], Awaitable[str]]

# polkit's authority (polkit docs: org.freedesktop.PolicyKit1.Authority.CheckAuthorization).
POLKIT = ("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.PolicyKit1.Authority")
POLKIT_ALLOW_USER_INTERACTION = 0x1  # CheckAuthorizationFlags
POLKIT_TIMEOUT = 25.0
POLKIT_INTERACTIVE_TIMEOUT = 300.0  # an authentication dialog waits for a human


# --- values: snapshot -> dbus-next values --------------------------------------------


def snapshot_values(snapshot: model.Snapshot) -> dict[str, Any]:
    """The snapshot's properties as dbus-next values (a{sv} / aa{sv} items typed per model.RECORDS)."""
    out: dict[str, Any] = {}
    for name, sig in model.PROPERTY_SIGNATURES.items():
        value = getattr(snapshot, name)
        if sig in ("aa{sv}", "a{sv}"):
            sigs = model.key_signatures(name)
            if sig == "aa{sv}":
                value = [{k: Variant(sigs[k], v) for k, v in model.record_to_dict(r).items()} for r in value]
            else:  # BootedRoot: (key, value) pairs
                value = {k: Variant(sigs[k], v) for k, v in value}
        out[name] = value
    return out


def unwrap(value: Any) -> Any:
    """dbus-next values (Variants inside lists and dicts) as plain Python values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


# --- the object -----------------------------------------------------------------------


def _property(name: str, sig: str) -> Any:
    def getter(self: Manager) -> Any:
        return self._values[name]

    getter.__name__ = name
    getter.__annotations__ = {"return": sig}
    return dbus_property(access=PropertyAccess.READ, name=name)(getter)


class _ManagerBase(ServiceInterface):
    pass


for _name, _sig in PROPERTIES.items():
    setattr(_ManagerBase, _name, _property(_name, _sig))  # dbus-next reads the value by this name


def interface_xml() -> ET.Element:
    """The Manager's <interface> element, with arg names and annotations."""
    iface = ET.Element("interface", name=INTERFACE)
    for name, (ins, outs) in METHODS.items():
        m = ET.SubElement(iface, "method", name=name)
        for arg, sig in ins:
            ET.SubElement(m, "arg", name=arg, type=sig, direction="in")
        for arg, sig in outs:
            ET.SubElement(m, "arg", name=arg, type=sig, direction="out")
    for name, args in SIGNALS.items():
        s = ET.SubElement(iface, "signal", name=name)
        for arg, sig in args:
            ET.SubElement(s, "arg", name=arg, type=sig)
    for name, sig in PROPERTIES.items():
        p = ET.SubElement(iface, "property", name=name, type=sig, access="read")
        ET.SubElement(p, "annotation", name=EMITS, value=EMITS_CHANGED[name])
    return iface


_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


class Manager(_ManagerBase):
    """org.ostreewatch1.Manager: the published snapshot, its signals, and its methods."""

    def __init__(
        self,
        snapshot: model.Snapshot,
        generation: int,
        version: str,
        reload: ReloadHook,
        set_entry: SetEntryHook | None = None,
        set_deployment: SetDeploymentHook | None = None,
    ) -> None:
        super().__init__(INTERFACE)
        self.snapshot = snapshot
        self.generation = generation
        self._values: dict[str, Any] = dict(snapshot_values(snapshot), Generation=generation, Version=version)
        self._reload = reload
        self._set_entry = set_entry
        self._set_deployment = set_deployment
        self._buses: list[MessageBus] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._variants: dict[str, Variant] | None = None
        self._all_bytes: bytes | None = None

    # -- publishing --

    def publish(self, snapshot: model.Snapshot, generation: int, changes: Changes) -> None:
        """Swap in a new snapshot and emit PropertiesChanged once, then the typed signals."""
        self.snapshot = snapshot
        self.generation = generation
        new_values = snapshot_values(snapshot)
        changed = {name: new_values[name] for name in changes.changed_properties}
        self._values.update(new_values)
        self._values["Generation"] = generation
        self._variants = None
        changed["Generation"] = generation
        self.emit_properties_changed(changed)
        if changes.deployments_added or changes.deployments_removed:
            self._signal(
                "DeploymentsChanged", "asas", [list(changes.deployments_added), list(changes.deployments_removed)]
            )
        if changes.entries_added or changes.entries_removed or changes.entries_modified:
            self._signal(
                "BootEntriesChanged",
                "asasas",
                [list(changes.entries_added), list(changes.entries_removed), list(changes.entries_modified)],
            )
        if changes.default_entry is not None:
            self._signal("DefaultEntryChanged", "ss", list(changes.default_entry))
        if changes.mount_points_changed:
            self._signal("MountsChanged", "as", [list(changes.mount_points_changed)])

    def _signal(self, member: str, signature: str, body: list[Any]) -> None:
        for bus in self._buses:
            if bus.connected:
                bus.send(Message.new_signal(OBJECT_PATH, INTERFACE, member, signature, body))

    # -- attaching to a bus --

    def attach(self, bus: MessageBus) -> None:
        """Export on BUS and intercept the calls dbus-next would mishandle."""
        bus.export(OBJECT_PATH, self)
        bus.add_message_handler(lambda msg: self._on_message(bus, msg))
        self._buses.append(bus)

    def detach(self, bus: MessageBus) -> None:
        if bus in self._buses:
            self._buses.remove(bus)

    def _on_message(self, bus: MessageBus, msg: Message) -> bool:
        if msg.message_type != MessageType.METHOD_CALL or msg.path != OBJECT_PATH:
            return False
        if msg.interface == "org.freedesktop.DBus.Introspectable" and msg.member == "Introspect":
            if msg.signature != "":
                return False  # dbus-next answers UnknownMethod
            self._reply(bus, msg, Message.new_method_return(msg, "s", [self.introspection_xml(bus)]))
            return True
        if msg.interface == PROPERTIES_IFACE:
            return self._check_properties_call(bus, msg)
        if msg.interface not in (INTERFACE, None) or (msg.interface is None and msg.member not in METHODS):
            return False
        task = asyncio.ensure_future(self._dispatch(bus, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _check_properties_call(self, bus: MessageBus, msg: Message) -> bool:
        """Answer bad Properties calls ourselves (dbus-next's errors echo a 1 MiB name back whole)."""
        sigs = {"Get": "ss", "GetAll": "s", "Set": "ssv"}
        if sigs.get(msg.member) != msg.signature:
            return False  # dbus-next answers UnknownMethod (its message names only the member)
        iface = msg.body[0]
        if iface not in (
            INTERFACE,
            "org.freedesktop.DBus.Properties",
            "org.freedesktop.DBus.Introspectable",
            "org.freedesktop.DBus.Peer",
        ):
            self._reply(
                bus,
                msg,
                Message.new_error(
                    msg,
                    "org.freedesktop.DBus.Error.UnknownInterface",
                    f"no interface {_clip(iface)!r} at {OBJECT_PATH}",
                ),
            )
            return True
        if msg.member != "GetAll" and iface == INTERFACE and msg.body[1] not in PROPERTIES:
            self._reply(
                bus,
                msg,
                Message.new_error(
                    msg,
                    "org.freedesktop.DBus.Error.UnknownProperty",
                    f"{INTERFACE} has no property {_clip(msg.body[1])!r}",
                ),
            )
            return True
        if msg.member == "Set" and iface == INTERFACE:
            self._reply(
                bus,
                msg,
                Message.new_error(msg, "org.freedesktop.DBus.Error.PropertyReadOnly", f"{msg.body[1]} is read-only"),
            )
            return True
        if msg.member == "GetAll" and iface == INTERFACE:
            self._reply(bus, msg, PremarshalledReply(msg, "a{sv}", self._all_body()))
            return True
        return False

    def _all_variants(self) -> dict[str, Variant]:
        """Every property as a Variant, built once per published change.

        dbus-next would build (and type-check, recursively) a Variant per property on
        every GetAll: about half of the daemon's time per call.
        """
        if self._variants is None:
            self._variants = {name: Variant(sig, self._values[name]) for name, sig in PROPERTIES.items()}
            self._all_bytes = None
        return self._variants

    def _all_body(self) -> bytes:
        """GetAll's reply body, marshalled once per published change (the rest of a call is its header)."""
        variants = self._all_variants()
        if self._all_bytes is None:
            self._all_bytes = marshall_body("a{sv}", [variants])
        return self._all_bytes

    def introspection_xml(self, bus: MessageBus) -> str:
        node = export_path_node(bus, OBJECT_PATH)
        for child in list(node):
            if child.tag == "interface" and child.get("name") == INTERFACE:
                node.remove(child)
        node.append(interface_xml())
        ET.indent(node)
        return _DOCTYPE + ET.tostring(node, encoding="unicode")

    @staticmethod
    def _reply(bus: MessageBus, msg: Message, reply: Message) -> None:
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED or not bus.connected:
            return
        bus.send(reply)

    async def _dispatch(self, bus: MessageBus, msg: Message) -> None:
        try:
            reply = await self._call(bus, msg)
        except errors.OstreewatchError as e:
            reply = Message.new_error(msg, e.dbus_name, str(e) or type(e).__name__)
        except Exception:  # never a traceback on the bus: log it here, name it there
            log.exception("internal error in %s", msg.member)
            reply = Message.new_error(msg, FAILED, f"internal error in {msg.member}; see the daemon's log")
        self._reply(bus, msg, reply)

    async def _call(self, bus: MessageBus, msg: Message) -> Message:
        handler = HANDLERS.get(msg.member)
        if handler is None:
            return Message.new_error(msg, UNKNOWN_METHOD, f"{INTERFACE} has no method {msg.member!r}")
        in_sig = "".join(sig for _, sig in METHODS[msg.member][0])
        if msg.signature != in_sig:
            raise errors.InvalidArgs(f"{msg.member} takes signature {in_sig!r}, got {msg.signature!r}")
        caller = await caller_of(bus, msg.sender)
        gate = authz.Gate(caller, msg.member, polkit_asker(bus, msg, caller))
        reply = await handler(self, msg, gate)
        if not gate.asked:  # a handler that forgot to authorize must not answer as if it had
            raise RuntimeError(f"the handler of {msg.member} answered without asking its authz.Gate")
        return reply

    def _writer_hook(self, hook: Callable[..., Awaitable[Any]] | None) -> Callable[..., Awaitable[Any]]:
        if hook is None:
            raise errors.NotSupported("this daemon was built without the boot writer")
        return hook


# --- dispatch: one handler per method of the interface ---------------------------------

Handler = Callable[[Manager, Message, authz.Gate], Awaitable[Message]]


async def _reload(m: Manager, msg: Message, gate: authz.Gate) -> Message:
    return Message.new_method_return(msg, "t", [await m._reload(gate)])


async def _set_default_entry(m: Manager, msg: Message, gate: authz.Gate) -> Message:
    await m._writer_hook(m._set_entry)("default", msg.body[0], gate)
    return Message.new_method_return(msg)


async def _set_next_entry(m: Manager, msg: Message, gate: authz.Gate) -> Message:
    await m._writer_hook(m._set_entry)("next", msg.body[0], gate)
    return Message.new_method_return(msg)


async def _set_default_deployment(m: Manager, msg: Message, gate: authz.Gate) -> Message:
    entry = await m._writer_hook(m._set_deployment)(msg.body[0], gate)
    return Message.new_method_return(msg, "s", [entry])


# member -> handler; check_handlers() below makes it match the XML's methods exactly.
HANDLERS: dict[str, Handler] = {
    "Reload": _reload,
    "SetDefaultEntry": _set_default_entry,
    "SetNextEntry": _set_next_entry,
    "SetDefaultDeployment": _set_default_deployment,
}


def check_handlers(handlers: dict[str, Handler], methods: dict[str, Any]) -> None:
    """Raise ImportError unless every method of the interface has a handler and every handler a method."""
    missing = sorted(set(methods) - set(handlers))
    unknown = sorted(set(handlers) - set(methods))
    if missing or unknown:
        raise ImportError(
            f"{INTERFACE}: methods without a handler: {', '.join(missing) or 'none'}; "
            f"handlers without a method in dbus/org.ostreewatch1.Manager.xml: {', '.join(unknown) or 'none'}"
        )


check_handlers(HANDLERS, METHODS)


def polkit_asker(bus: MessageBus, msg: Message, caller: model.Caller) -> authz.AskPolkit:
    """An AskPolkit for this call: CheckAuthorization over D-Bus for the caller's unique bus name.

    The subject is the unique name, not the pid: polkitd asks the bus daemon who
    owns it, so a recycled pid cannot pass for the caller. Interactive
    authentication is allowed only when the caller's message says so
    (ALLOW_INTERACTIVE_AUTHORIZATION, e.g. `busctl --allow-interactive-authorization=yes`).
    """
    interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)

    async def ask(action: str, details: dict[str, str]) -> str | None:
        query = Message(
            destination=POLKIT[0],
            path=POLKIT[1],
            interface=POLKIT[2],
            member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[
                ["system-bus-name", {"name": Variant("s", caller.bus_name)}],
                action,
                {k: str(v) for k, v in details.items()},
                POLKIT_ALLOW_USER_INTERACTION if interactive else 0,
                "",
            ],
        )
        try:
            reply = await asyncio.wait_for(
                bus.call(query), POLKIT_INTERACTIVE_TIMEOUT if interactive else POLKIT_TIMEOUT
            )
        except asyncio.TimeoutError:
            return "polkit did not answer"
        if reply is None or reply.message_type != MessageType.METHOD_RETURN:
            name = reply.error_name if reply is not None else "no reply"
            return f"polkit could not be asked: {name}"
        authorized, challenge, _ = reply.body[0]
        if authorized:
            return None
        if challenge:
            return "polkit requires authentication; allow interactive authorization to be asked"
        return "polkit said no"

    return ask


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- callers ----------------------------------------------------------------------------


def _unit_of(pid: int) -> str:
    """The systemd unit of PID from /proc/PID/cgroup (cgroup v2), "" when unknown."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            data = f.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""
    for line in data.splitlines():
        if line.startswith("0::"):
            for part in reversed(line[3:].split("/")):
                if part.endswith((".service", ".scope", ".socket", ".mount")):
                    return part
    return ""


async def caller_of(bus: MessageBus, sender: str | None) -> model.Caller:
    """Who sent a message, as the bus daemon vouches for it; uid -1 when it cannot say."""
    if not sender:
        return model.Caller()
    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="GetConnectionCredentials",
            signature="s",
            body=[sender],
        )
    )
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        return model.Caller(bus_name=sender)
    creds = reply.body[0]
    uid = int(creds["UnixUserID"].value) if "UnixUserID" in creds else -1
    pid = int(creds["ProcessID"].value) if "ProcessID" in creds else -1
    unit = await asyncio.get_running_loop().run_in_executor(None, _unit_of, pid) if pid > 0 else ""
    return model.Caller(uid=uid, pid=pid, bus_name=sender, unit=unit)


# --- connecting -------------------------------------------------------------------------


async def connect(spec: str) -> MessageBus:
    """Connect to the bus named by --bus; raises OSError (and others) when it is not there."""
    address = bus_address(spec)
    if not address:
        raise OSError(f"--bus {spec}: DBUS_SESSION_BUS_ADDRESS is not set")
    bus = new_bus(address)
    try:
        return await bus.connect()
    except BaseException:
        close_bus(bus)
        raise


def watch_name(bus: MessageBus, acquired: Callable[[], None]) -> None:
    """Call ACQUIRED when the bus gives this connection org.ostreewatch1 (its NameAcquired signal)."""

    def handler(msg: Message) -> None:
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.sender == "org.freedesktop.DBus"
            and msg.interface == "org.freedesktop.DBus"
            and msg.member == "NameAcquired"
            and msg.body == [BUS_NAME]
        ):
            acquired()

    bus.add_message_handler(handler)


async def own_name(bus: MessageBus) -> bool:
    """Ask for org.ostreewatch1 (queued if taken); True when we are the primary owner."""
    reply = await bus.request_name(BUS_NAME, NameFlag.NONE)
    return reply == RequestNameReply.PRIMARY_OWNER or reply == RequestNameReply.ALREADY_OWNER


# --- systemd: is a unit active (BootAssessment's boot_complete) ---------------------------

SYSTEMD = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")
SYSTEMD_CALL_TIMEOUT = 10.0


async def _systemd_call(
    bus: MessageBus, path: str, interface: str, member: str, signature: str, body: list[Any], dest: str = SYSTEMD[0]
) -> Any:
    """One call to systemd (or DEST); its reply body, or errors.DaemonUnavailable naming the error."""
    msg = Message(destination=dest, path=path, interface=interface, member=member, signature=signature, body=body)
    reply = await asyncio.wait_for(bus.call(msg), SYSTEMD_CALL_TIMEOUT)
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        name = reply.error_name if reply is not None else "no reply"
        raise errors.DaemonUnavailable(f"systemd {member}: {name}")
    return reply.body


async def watch_unit_active(bus: MessageBus, unit: str, on_state: Callable[[str], None]) -> None:
    """Call ON_STATE(ActiveState) of UNIT now and at each change systemd signals on BUS.

    Subscribe() makes systemd emit PropertiesChanged for units; LoadUnit gives the unit's
    object path whether or not it is loaded. Raises errors.DaemonUnavailable (no systemd on
    this bus, or it refused) or asyncio.TimeoutError.
    """
    path = (await _systemd_call(bus, SYSTEMD[1], SYSTEMD[2], "LoadUnit", "s", [unit]))[0]
    unit_iface = "org.freedesktop.systemd1.Unit"

    def on_message(msg: Message) -> bool:
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.path == path
            and msg.member == "PropertiesChanged"
            and msg.interface == PROPERTIES_IFACE
            and msg.signature == "sa{sv}as"
            and msg.body[0] == unit_iface
            and "ActiveState" in msg.body[1]
        ):
            on_state(str(msg.body[1]["ActiveState"].value))
        return False  # others may want it too

    rule = (
        f"type='signal',sender='{SYSTEMD[0]}',path='{path}',interface='{PROPERTIES_IFACE}',member='PropertiesChanged'"
    )
    bus_dbus = "org.freedesktop.DBus"
    await _systemd_call(bus, "/org/freedesktop/DBus", bus_dbus, "AddMatch", "s", [rule], dest=bus_dbus)
    bus.add_message_handler(on_message)
    await _systemd_call(bus, SYSTEMD[1], SYSTEMD[2], "Subscribe", "", [])
    state = await _systemd_call(bus, path, PROPERTIES_IFACE, "Get", "ss", [unit_iface, "ActiveState"])
    on_state(str(state[0].value))
