"""A GVariant deserializer (no GLib), little endian, normal form.

Follows the GVariant serialization specification (GLib docs "GVariant
Serialization", gvariant-serialiser.c): fixed-size basic types aligned to
their size; strings NUL-terminated; containers framed with offsets whose size
(0/1/2/4/8 bytes) follows the container's size; tuples store the framing
offsets of non-final variable-size members at the end, in reverse order;
variants are the child, a NUL and the child's type string.

Types: b y n q i u x t h d s o g v m* a* (...) {..}. Values: bool, int, float,
str, bytes (for "ay"), list, tuple, dict (for "a{..}"), None for an empty maybe;
a variant is unwrapped to its value.
"""

from __future__ import annotations

import struct

from ostreewatch._record import frozen
from ostreewatch.errors import GVariantError

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from typing import Any

_BASIC = {
    "b": (1, "<B"),
    "y": (1, "<B"),
    "n": (2, "<h"),
    "q": (2, "<H"),
    "i": (4, "<i"),
    "u": (4, "<I"),
    "h": (4, "<i"),
    "x": (8, "<q"),
    "t": (8, "<Q"),
    "d": (8, "<d"),
}
# ostree's _ostree_sysroot_parse_deploy_path_name.
_HEX = frozenset("0123456789abcdef")
_MAX_DEPTH = 64  # GLib's G_VARIANT_MAX_RECURSION_DEPTH is 128; 64 is plenty here


@frozen
class VType:
    """A parsed type: code plus children; `fixed_size` None means variable size."""

    code: str  # one letter, "(" for tuples, "{" for dict entries
    children: tuple[VType, ...]
    alignment: int
    fixed_size: int | None
    text: str


def _align(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def _tuple_layout(children: tuple[VType, ...]) -> tuple[int, int | None]:
    alignment = 1
    for c in children:
        alignment = max(alignment, c.alignment)
    size = 0
    for c in children:
        if c.fixed_size is None:
            return alignment, None
        size = _align(size, c.alignment) + c.fixed_size
    if not children:
        return 1, 1  # the unit tuple "()" is one zero byte
    return alignment, _align(size, alignment)


def _parse_type(s: str, i: int, depth: int) -> tuple[VType, int]:
    if depth > _MAX_DEPTH:
        raise GVariantError("type nests too deeply")
    if i >= len(s):
        raise GVariantError(f"incomplete type string {s!r}")
    c = s[i]
    if c in _BASIC:
        size = _BASIC[c][0]
        return VType(c, (), size, size, c), i + 1
    if c in "sog":
        return VType(c, (), 1, None, c), i + 1
    if c == "v":
        return VType(c, (), 8, None, c), i + 1
    if c in "am":
        child, j = _parse_type(s, i + 1, depth + 1)
        fixed = None
        return VType(c, (child,), child.alignment, fixed, s[i:j]), j
    if c == "(":
        j = i + 1
        kids = []
        while j < len(s) and s[j] != ")":
            k, j = _parse_type(s, j, depth + 1)
            kids.append(k)
        if j >= len(s):
            raise GVariantError(f"unclosed tuple in type {s!r}")
        al, fixed = _tuple_layout(tuple(kids))
        return VType("(", tuple(kids), al, fixed, s[i : j + 1]), j + 1
    if c == "{":
        key, j = _parse_type(s, i + 1, depth + 1)
        if key.code not in _BASIC and key.code not in "sog":
            raise GVariantError(f"dict entry key must be basic in {s!r}")
        val, j = _parse_type(s, j, depth + 1)
        if j >= len(s) or s[j] != "}":
            raise GVariantError(f"bad dict entry in type {s!r}")
        al, fixed = _tuple_layout((key, val))
        return VType("{", (key, val), al, fixed, s[i : j + 1]), j + 1
    raise GVariantError(f"invalid type character {c!r} in {s!r}")


def parse_type(type_string: str) -> VType:
    """Parse one complete type string."""
    if not isinstance(type_string, str):
        raise GVariantError("type string must be text")
    t, end = _parse_type(type_string, 0, 0)
    if end != len(type_string):
        raise GVariantError(f"trailing characters in type string {type_string!r}")
    return t


def _offset_size(size: int) -> int:
    if size == 0:
        return 0
    if size <= 0xFF:
        return 1
    if size <= 0xFFFF:
        return 2
    if size <= 0xFFFFFFFF:
        return 4
    return 8


def _read_offset(data: bytes, pos: int, osz: int) -> int:
    return int.from_bytes(data[pos : pos + osz], "little")


def _string(data: bytes, t: VType) -> str:
    if not data or data[-1] != 0 or 0 in data[:-1]:
        raise GVariantError(f"'{t.code}' value is not one NUL-terminated string")
    try:
        return data[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise GVariantError(f"'{t.code}' value is not valid UTF-8") from None


def _value(data: bytes, t: VType, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise GVariantError("value nests too deeply")
    if t.fixed_size is not None and len(data) != t.fixed_size:
        raise GVariantError(f"'{t.text}' needs {t.fixed_size} bytes, got {len(data)}")
    c = t.code
    if c in _BASIC:
        v = struct.unpack(_BASIC[c][1], data)[0]
        if c == "b":
            if v > 1:
                raise GVariantError(f"boolean byte {v} is neither 0 nor 1")
            return bool(v)
        return v
    if c in "sog":
        return _string(data, t)
    if c == "v":
        sep = data.rfind(b"\0")
        if sep < 0:
            raise GVariantError("variant without a type string")
        try:
            inner_type = parse_type(data[sep + 1 :].decode("ascii"))
        except UnicodeDecodeError:
            raise GVariantError("variant type string is not ASCII") from None
        return _value(data[:sep], inner_type, depth + 1)
    if c == "m":
        child = t.children[0]
        if not data:
            return None
        if child.fixed_size is not None:
            return _value(data, child, depth + 1)
        if data[-1] != 0:
            raise GVariantError("maybe of a variable-size type lacks its trailing zero byte")
        return _value(data[:-1], child, depth + 1)
    if c == "a":
        return _array(data, t.children[0], depth)
    return _tuple(data, t, depth)


def _array(data: bytes, child: VType, depth: int) -> Any:
    items = []
    if child.fixed_size is not None:
        if child.fixed_size == 0 or len(data) % child.fixed_size:
            raise GVariantError(f"array of '{child.text}' has a partial element")
        if child.code == "y":
            return bytes(data)
        n = len(data) // child.fixed_size
        for k in range(n):
            items.append(_value(data[k * child.fixed_size : (k + 1) * child.fixed_size], child, depth + 1))
    elif data:
        osz = _offset_size(len(data))
        last_end = _read_offset(data, len(data) - osz, osz)
        if last_end > len(data) or (len(data) - last_end) % osz:
            raise GVariantError("array framing offsets are out of range")
        n = (len(data) - last_end) // osz
        start = 0
        for k in range(n):
            end = _read_offset(data, last_end + k * osz, osz)
            start = _align(start, child.alignment)
            if not start <= end <= last_end:
                raise GVariantError("array element offsets are out of order")
            items.append(_value(data[start:end], child, depth + 1))
            start = end
    if child.code == "{":
        return {k: v for k, v in items}
    return items


def _tuple(data: bytes, t: VType, depth: int) -> Any:
    kids = t.children
    if not kids:
        if data not in (b"", b"\0"):
            raise GVariantError("unit tuple must be one zero byte")
        return ()
    osz = _offset_size(len(data))
    n_frames = sum(1 for k in kids[:-1] if k.fixed_size is None)
    frames_start = len(data) - osz * n_frames
    if frames_start < 0:
        raise GVariantError(f"'{t.text}' too short for its framing offsets")
    values = []
    offset = 0
    frame = 0
    for idx, k in enumerate(kids):
        offset = _align(offset, k.alignment)
        if k.fixed_size is not None:
            end = offset + k.fixed_size
        elif idx == len(kids) - 1:
            end = frames_start
        else:
            frame += 1
            end = _read_offset(data, len(data) - osz * frame, osz)
        if not offset <= end <= frames_start:
            raise GVariantError(f"member {idx} of '{t.text}' is out of range")
        values.append(_value(data[offset:end], k, depth + 1))
        offset = end
    return tuple(values)


def parse_variant(data: bytes, type_string: str) -> Any:
    """Deserialize `data` as a value of `type_string`; raises GVariantError."""
    try:
        t = parse_type(type_string)
        return _value(bytes(data), t, 0)
    except GVariantError:
        raise
    except RecursionError:
        raise GVariantError("value nests too deeply") from None
    except Exception as e:  # nothing but our own error leaves a parser
        raise GVariantError(f"cannot deserialize '{type_string}': {e}") from e


def parse_ostree_booted(data: bytes) -> dict[str, Any]:
    """/run/ostree-booted (ostree >= 2024.2): an a{sv}; empty data (older ostree) gives {}.

    Keys (ostree src/libotcore/otcore.h OTCORE_RUN_BOOTED_KEY_*, written by
    src/switchroot/ostree-prepare-root.c and src/libotcore/otcore-prepare-root.c):
    `backing-root-device-inode` (tt, always: the (st_dev, st_ino) of the booted
    deployment directory, checked here), `composefs` (b), `composefs.verity` (b),
    `composefs.signed` (s: the public key), `root.transient` (b),
    `root.transient-ro` (b), `sysroot-ro` (b), `transient-etc` (s). Other keys
    are returned as they are; state.py keeps the known ones of the right type.
    """
    if not data:
        return {}
    d: dict[str, Any] = parse_variant(data, "a{sv}")
    bri = d.get("backing-root-device-inode")
    if bri is not None and not (
        isinstance(bri, tuple) and len(bri) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in bri)
    ):
        raise GVariantError("backing-root-device-inode is not a (tt) pair")
    return d


def parse_staged_deployment(data: bytes) -> dict[str, Any]:
    """/run/ostree/staged-deployment: the a{sv} ostree writes when staging.

    _ostree_sysroot_reload_staged (ostree src/libostree/ostree-sysroot.c) reads
    "target" (a{sv}: the deployment), "kargs" (as), "overlay-initrds" (as) and
    "locked" (b). The target names the deployment with "name" = CHECKSUM.SERIAL
    plus "osname", "bootcsum", "bootserial"; explicit "checksum"/"deployserial"
    keys are accepted too. Returns a plain dict with at least osname, checksum
    and serial (-1 when unknown), the target's other keys, and the top-level
    keys other than "target".
    """
    d = parse_variant(data, "a{sv}")
    target = d.get("target")
    if not isinstance(target, dict):
        raise GVariantError("staged deployment has no 'target' dictionary")
    out: dict[str, Any] = {k: v for k, v in d.items() if k != "target"}
    out.update(target)
    checksum = target.get("checksum")
    serial = target.get("deployserial", target.get("deploy-serial", -1))
    name = target.get("name")
    if isinstance(name, str):
        csum, _, serial_text = name.partition(".")  # ([0-9a-f]+)\.([0-9]+)
        if not csum or not _HEX.issuperset(csum) or not (serial_text.isascii() and serial_text.isdigit()):
            raise GVariantError(f"invalid deploy name {name!r}, expected CHECKSUM.SERIAL")
        checksum = checksum or csum
        serial = int(serial_text) if serial == -1 else serial
    osname = target.get("osname")
    if not isinstance(osname, str) or not osname:
        raise GVariantError("staged deployment target has no 'osname'")
    if not isinstance(checksum, str) or not checksum:
        raise GVariantError("staged deployment target has no checksum")
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise GVariantError("staged deployment serial is not an integer")
    out["osname"] = osname
    out["checksum"] = checksum
    out["serial"] = serial
    return out
