"""The dbus-next workarounds, in one place: every private dbus-next name the project uses is here.

service.py (and through it client.py) use these instead of dbus-next's internals, so
that a dbus-next upgrade is reviewed against this one module.

dbus-next internals relied on (setup.cfg pins dbus-next==0.2.3;
tests/test_service_dbusnext.py holds a digest of each and fails when the installed one
differs in any of them, and when service.py or client.py uses a private name at all):
- dbus_next._private.marshaller.Marshaller (buffer, marshall(), align()): GetAll's body
  marshalled once per change (marshall_body), and PremarshalledReply's header.
- dbus_next._private.constants: LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField.
- Message._marshall(negotiate_unix_fd): PremarshalledReply overrides it.
- dbus_next.aio.message_bus: _MessageWriter (its attributes bus, sock, loop, fd, messages,
  buf, offset, unix_fds, fut and write_callback()), _future_set_result, _future_set_exception;
  MessageBus._writer (replaced by _PatientWriter in new_bus), MessageBus._finalize(),
  MessageBus._sock (closed by close_bus) and MessageBus._introspect_export_path()
  (export_path_node: the introspection of the rest of the path).
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from typing import Any

from dbus_next import Message, MessageType, Variant
from dbus_next._private.constants import LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField
from dbus_next._private.marshaller import Marshaller
from dbus_next.aio import MessageBus
from dbus_next.aio import message_bus as _aio_bus


def marshall_body(signature: str, body: list[Any]) -> bytes:
    """BODY marshalled as SIGNATURE, once (GetAll's reply body, kept until the next change)."""
    marshaller = Marshaller(signature, body)
    marshaller.marshall()
    return bytes(marshaller.buffer)


def export_path_node(bus: MessageBus, path: str) -> ET.Element:
    """What dbus-next would answer to Introspect of PATH (its other interfaces and child nodes)."""
    node: ET.Element = bus._introspect_export_path(path).to_xml()
    return node


def new_bus(address: str) -> MessageBus:
    """A MessageBus for ADDRESS (not yet connected) whose writer waits on a full socket (_PatientWriter)."""
    bus = MessageBus(bus_address=address)
    # we never send unix fds, so the fd-passing branch is not needed; its __init__ is dbus-next's, unannotated
    bus._writer = _PatientWriter(bus)  # type: ignore[no-untyped-call]
    return bus


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
