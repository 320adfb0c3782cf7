"""The D-Bus edge: the org.ostreewatch1.Manager object, and connecting to a bus.

With client.py, the only modules importing dbus_next. Properties are served by a
dbus-next ServiceInterface (read-only); method calls to the Manager and
Introspect of its path are intercepted with a message handler, because
dbus-next hides the caller from @method handlers and answers uncaught
exceptions with a Python traceback (docs/platform.md, dbus-next). Every error that leaves here is a named
D-Bus error. The members and their signatures come from
dbus/org.ostreewatch1.Manager.xml, through the generated _interface.py.

dbus-next internals relied on (setup.cfg pins dbus-next==0.2.3;
tests/test_service_dbusnext.py fails when the installed one differs in any of them):
- dbus_next._private.marshaller.Marshaller (buffer, marshall(), align()): GetAll's body
  marshalled once per change, and PremarshalledReply's header.
- dbus_next._private.constants: LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField.
- Message._marshall(negotiate_unix_fd): PremarshalledReply overrides it.
- dbus_next.aio.message_bus: _MessageWriter (its attributes bus, sock, loop, fd, messages,
  buf, offset, unix_fds, fut and write_callback()), _future_set_result, _future_set_exception;
  MessageBus._writer (replaced by _PatientWriter), MessageBus._finalize(), MessageBus._sock
  (closed by close_bus) and MessageBus._introspect_export_path() (the introspection of the
  rest of the path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Awaitable
from typing import Any, Callable

from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next._private.constants import LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField
from dbus_next._private.marshaller import Marshaller
from dbus_next.aio import MessageBus
from dbus_next.aio import message_bus as _aio_bus
from dbus_next.constants import NameFlag, RequestNameReply
from dbus_next.service import PropertyAccess, ServiceInterface, dbus_property

from . import _interface, errors, model

# re-exported: service.BUS_NAME, service.OBJECT_PATH and service.INTERFACE stay importable
from .busnames import BUS_NAME as BUS_NAME
from .busnames import INTERFACE as INTERFACE
from .busnames import OBJECT_PATH as OBJECT_PATH
from .busnames import PROPERTIES_IFACE as PROPERTIES_IFACE
from .changes import Changes

EMITS = "org.freedesktop.DBus.Property.EmitsChangedSignal"

UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
INVALID_ARGS = errors.InvalidArgs.dbus_name
FAILED = errors.OstreewatchError.dbus_name

log = logging.getLogger("ostreewatch.service")

# The interface, as dbus/org.ostreewatch1.Manager.xml declares it (scripts/gen-interface.py writes _interface.py).
# method name -> (in args [(name, sig)], out args [(name, sig)])
METHODS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = _interface.METHODS
SIGNALS: dict[str, list[tuple[str, str]]] = _interface.SIGNALS
PROPERTIES: dict[str, str] = _interface.PROPERTIES
# Version never changes while the daemon runs ("const"); every other property is sent with its value.
EMITS_CHANGED: dict[str, str] = _interface.EMITS_CHANGED

# Hooks the daemon gives the service. Each gets the caller and an AskPolkit for this very call;
# the daemon decides (bootwrite.authorize: uid 0, or polkit through AskPolkit) and audits.
AskPolkit = Callable[[str, dict[str, str]], Awaitable[None]]
ReloadHook = Callable[[model.Caller, AskPolkit], Awaitable[int]]
SetEntryHook = Callable[[str, str, model.Caller, AskPolkit], Awaitable[None]]
SetDeploymentHook = Callable[[str, model.Caller, AskPolkit], Awaitable[str]]

# polkit's authority (polkit docs: org.freedesktop.PolicyKit1.Authority.CheckAuthorization).
POLKIT = ("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.PolicyKit1.Authority")
POLKIT_ALLOW_USER_INTERACTION = 0x1  # CheckAuthorizationFlags
POLKIT_TIMEOUT = 25.0
POLKIT_INTERACTIVE_TIMEOUT = 300.0  # an authentication dialog waits for a human


# --- values: snapshot -> dbus-next values --------------------------------------------


def _record_variants(record: Any) -> dict[str, Variant]:
    sigs = model._KEYS_OF[type(record)]
    return {key: Variant(sig, value) for key, value in model.record_to_dict(record).items() for sig in (sigs[key],)}


def snapshot_values(snapshot: model.Snapshot) -> dict[str, Any]:
    """The snapshot's properties as dbus-next values (a{sv} / aa{sv} items typed per model.*_KEYS)."""
    out: dict[str, Any] = {}
    for name, sig in model.PROPERTY_SIGNATURES.items():
        value = getattr(snapshot, name)
        if sig == "aa{sv}":
            value = [_record_variants(r) for r in value]
        elif sig == "a{sv}":  # (key, value) pairs, each key typed by model.key_signatures
            sigs = model.key_signatures(name)
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


def snapshot_from_plain(props: dict[str, Any]) -> model.Snapshot:
    """GetAll's plain values back into a model.Snapshot (unknown keys ignored, missing ones defaulted)."""
    records = {
        "Deployments": model.Deployment,
        "BootEntries": model.BootEntry,
        "Mounts": model.Mount,
        "Problems": model.Problem,
        "BootHistory": model.BootRecord,
    }
    fields: dict[str, Any] = {}
    for name in model.PROPERTY_SIGNATURES:
        if name not in props:
            continue
        value = props[name]
        if model.PROPERTY_SIGNATURES[name] == "a{sv}":
            value = model.dict_items(name, value) if isinstance(value, dict) else ()
        elif name in records:
            cls = records[name]
            keys = model.key_signatures(name)
            value = tuple(
                cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in item.items() if k in keys})
                for item in value
            )
        fields[name] = value
    return model.Snapshot(**fields)


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
            body = Marshaller("a{sv}", [variants])
            body.marshall()
            self._all_bytes = bytes(body.buffer)
        return self._all_bytes

    def introspection_xml(self, bus: MessageBus) -> str:
        node = bus._introspect_export_path(OBJECT_PATH).to_xml()
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
        if msg.member not in METHODS:
            return Message.new_error(msg, UNKNOWN_METHOD, f"{INTERFACE} has no method {msg.member!r}")
        in_sig = "".join(sig for _, sig in METHODS[msg.member][0])
        if msg.signature != in_sig:
            raise errors.InvalidArgs(f"{msg.member} takes signature {in_sig!r}, got {msg.signature!r}")
        caller = await caller_of(bus, msg.sender)
        ask = polkit_asker(bus, msg, caller)
        if msg.member == "Reload":
            return Message.new_method_return(msg, "t", [await self._reload(caller, ask)])
        if msg.member == "SetDefaultDeployment":
            if self._set_deployment is None:
                raise errors.NotSupported("this daemon was built without the boot writer")
            return Message.new_method_return(msg, "s", [await self._set_deployment(msg.body[0], caller, ask)])
        which = "default" if msg.member == "SetDefaultEntry" else "next"
        if self._set_entry is None:
            raise errors.NotSupported("this daemon was built without the boot writer")
        await self._set_entry(which, msg.body[0], caller, ask)
        return Message.new_method_return(msg)


def polkit_asker(bus: MessageBus, msg: Message, caller: model.Caller) -> AskPolkit:
    """An AskPolkit for this call: CheckAuthorization over D-Bus for the caller's unique bus name.

    The subject is the unique name, not the pid: polkitd asks the bus daemon who
    owns it, so a recycled pid cannot pass for the caller. Interactive
    authentication is allowed only when the caller's message says so
    (ALLOW_INTERACTIVE_AUTHORIZATION, e.g. `busctl --allow-interactive-authorization=yes`).
    """
    interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)

    async def ask(action: str, details: dict[str, str]) -> None:
        def denied(why: str) -> errors.AccessDenied:
            return errors.AccessDenied(
                f"{msg.member} needs root or the polkit action {action} (caller uid {caller.uid}: {why})"
            )

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
            raise denied("polkit did not answer") from None
        if reply is None or reply.message_type != MessageType.METHOD_RETURN:
            name = reply.error_name if reply is not None else "no reply"
            raise denied(f"polkit could not be asked: {name}")
        authorized, challenge, _ = reply.body[0]
        if authorized:
            return
        if challenge:
            raise denied("polkit requires authentication; allow interactive authorization to be asked")
        raise denied("polkit said no")

    return ask


class PremarshalledReply(Message):
    """A method return whose body is bytes marshalled earlier: only its header is built per call.

    Owns the header half of dbus-next 0.2.3's Message._marshall (the version setup.cfg pins;
    tests/test_service_premarshalled.py fails if dbus-next changes underneath): a method
    return's header fields are REPLY_SERIAL, DESTINATION and SIGNATURE.
    """

    def __init__(self, call: Message, signature: str, body: bytes) -> None:
        super().__init__(
            message_type=MessageType.METHOD_RETURN,
            reply_serial=call.serial,
            destination=call.sender,
            signature=signature,
        )
        self._body_bytes = body

    def _marshall(self, negotiate_unix_fd: bool = False) -> bytearray:
        fields: list[Any] = [[HeaderField.REPLY_SERIAL.value, Variant("u", self.reply_serial)]]
        if self.destination:
            fields.append([HeaderField.DESTINATION.value, Variant("s", self.destination)])
        fields.append([HeaderField.SIGNATURE.value, Variant("g", self.signature)])
        header = Marshaller(
            "yyyyuua(yv)",
            [
                LITTLE_ENDIAN,
                self.message_type.value,
                self.flags.value,
                PROTOCOL_VERSION,
                len(self._body_bytes),
                self.serial,
                fields,
            ],
        )
        header.marshall()
        header.align(8)
        return header.buffer + self._body_bytes


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


def bus_address(spec: str) -> tuple[str | None, BusType]:
    """--bus system|session|ADDRESS as (address or None, bus type)."""
    if spec == "system":
        return None, BusType.SYSTEM
    if spec == "session":
        return None, BusType.SESSION
    return spec, BusType.SYSTEM


def socket_path(spec: str) -> str | None:
    """The unix socket file a bus spec resolves to, None when not a path (abstract, tcp)."""
    address, bus_type = bus_address(spec)
    if address is None:
        if bus_type == BusType.SYSTEM:
            address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/var/run/dbus/system_bus_socket")
        else:
            address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    first = address.split(";")[0]
    if not first.startswith("unix:"):
        return None
    for kv in first[5:].split(","):
        key, _, value = kv.partition("=")
        if key == "path":
            return value
    return None


class _PatientWriter(_aio_bus._MessageWriter):
    """dbus-next's writer, except that a full socket buffer (EAGAIN) means "wait", not "the bus is gone".

    dbus-next 0.2.3 finalizes the connection on BlockingIOError, so 50 clients' GetAll replies at
    once dropped the daemon off the bus (found by tests/test_reliability.py's soak). Here a full
    buffer keeps the message and its offset, and the loop's writer callback resumes when writable.
    """

    def write_callback(self) -> None:
        try:
            while True:
                if self.buf is None:
                    if self.messages.qsize() == 0:
                        self.loop.remove_writer(self.fd)
                        return
                    buf, unix_fds, fut = self.messages.get_nowait()
                    self.unix_fds = unix_fds
                    self.buf = memoryview(buf)
                    self.offset = 0
                    self.fut = fut
                try:
                    self.offset += self.sock.send(self.buf[self.offset :])
                except (BlockingIOError, InterruptedError):
                    return  # still registered as a writer: called again when the socket drains
                if self.offset >= len(self.buf):
                    self.buf = None
                    _aio_bus._future_set_result(self.fut, None)
                else:
                    return
        except Exception as e:  # noqa: BLE001 - as dbus-next's own writer: any failure ends the connection
            _aio_bus._future_set_exception(self.fut, e)
            self.bus._finalize(e)


def close_bus(bus: MessageBus) -> None:
    """Really close a bus connection: dbus-next's disconnect/finalize leave the socket open, and
    the bus daemon would keep our old connection (and its name) alive."""
    with contextlib.suppress(Exception):  # a half-closed connection may fail in any way: the socket still closes
        bus.disconnect()
    sock = getattr(bus, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


async def connect(spec: str) -> MessageBus:
    """Connect to the bus named by --bus; raises OSError (and others) when it is not there."""
    address, bus_type = bus_address(spec)
    # dbus-next annotates `bus_address: str = None`: None is the bus type's default address.
    bus = MessageBus(bus_address=address, bus_type=bus_type)  # type: ignore[arg-type]
    # we never send unix fds, so the fd-passing branch is not needed; its __init__ is dbus-next's, unannotated
    bus._writer = _PatientWriter(bus)  # type: ignore[no-untyped-call]
    try:
        return await bus.connect()
    except BaseException:
        close_bus(bus)
        raise


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
