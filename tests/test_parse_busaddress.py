"""parse.busaddress: D-Bus server addresses, judged against dbus-next's own parser.

ostreewatchd checks --bus before READY=1 with the pure parser; the connection is
later made by dbus-next, so both must accept and refuse the same addresses.
"""

from __future__ import annotations

import pytest
from dbus_next._private.address import parse_address as dbus_next_parse

from ostreewatch.errors import BusAddressError
from ostreewatch.parse.busaddress import parse_address

pytestmark = pytest.mark.unit

ADDRESSES = [
    "unix:path=/run/dbus/system_bus_socket",
    "unix:path=/tmp/with%20space/bus",
    "unix:abstract=/tmp/dbus-XYZ,guid=0123456789abcdef0123456789abcdef",
    "tcp:host=127.0.0.1,port=4711",
    "unix:path=/a;unix:path=/b",
    "",
    "nonsense",
    "unix:path",
    "unix:path=/has space",
    'unix:path=/q"uote',
    ";;",
    "unix:",
]


@pytest.mark.parametrize("text", ADDRESSES)
def test_accepts_and_refuses_what_dbus_next_does(text: str) -> None:
    try:
        expected = [(t, dict(o)) for t, o in dbus_next_parse(text)]
    except Exception:  # noqa: BLE001 - whatever dbus-next raises counts as a refusal
        expected = None
    if expected is None:
        with pytest.raises(BusAddressError):
            parse_address(text)
    else:
        assert parse_address(text) == expected


def test_values_are_unescaped() -> None:
    assert parse_address("unix:path=/tmp/with%20space/bus") == [("unix", {"path": "/tmp/with space/bus"})]


def test_a_bad_bus_is_refused_before_anything_starts() -> None:
    from ostreewatch.daemon import main

    assert main(["--sample", "--bus", "unix:path"]) == 1
