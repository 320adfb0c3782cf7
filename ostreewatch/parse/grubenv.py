"""GRUB environment blocks (grubenv), byte for byte as grub reads and writes them.

A port of grub-core/lib/envblk.c (grub_envblk_iterate, grub_envblk_set,
grub_envblk_delete) and of util/grub-editenv.c's "set"/"unset": the block starts
with "# GRUB Environment Block\\n", holds "name=value\\n" lines where only "\\\\"
and newline in values are escaped (by a backslash), and is padded with "#" to
its fixed size (1024 bytes by default; a bigger block keeps its size).
"""

from __future__ import annotations

from ostreewatch.errors import GrubenvError

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from collections.abc import Mapping

SIGNATURE = b"# GRUB Environment Block\n"
DEFAULT_SIZE = 1024
_NL = 0x0A
_BS = 0x5C
_HASH = 0x23
_EQ = 0x3D


def create_grubenv(size: int = DEFAULT_SIZE) -> bytes:
    """An empty block, as `grub-editenv FILE create` writes it."""
    if size < len(SIGNATURE) + 1:
        raise GrubenvError(f"environment block size {size} is too small")
    return SIGNATURE + b"#" * (size - len(SIGNATURE))


def _check_block(buf: bytes) -> None:
    # grub_envblk_open: sizeof(signature) counts the C NUL, so a block needs one more byte.
    if len(buf) < len(SIGNATURE) + 1 or not buf.startswith(SIGNATURE):
        raise GrubenvError("invalid environment block (no '# GRUB Environment Block' header)")


def _find_next_line(buf: bytes | bytearray, p: int, pend: int) -> int:
    while p < pend:
        c = buf[p]
        if c == _BS:
            p += 2
        elif c == _NL:
            break
        else:
            p += 1
    return p + 1


def _iterate(buf: bytes) -> list[tuple[bytes, bytes]]:
    """grub_envblk_iterate: (name, unescaped value) pairs; stops silently where grub does."""
    out: list[tuple[bytes, bytes]] = []
    p = len(SIGNATURE)
    pend = len(buf)
    while p < pend:
        if buf[p] != _HASH:
            name_start = p
            eq = buf.find(b"=", p)
            if eq < 0:
                return out  # "Broken": grub stops here
            p = eq + 1
            value_start = p
            while p < pend:
                c = buf[p]
                if c == _NL:
                    break
                p += 2 if c == _BS else 1
            if p >= pend:
                return out  # "Broken"
            value = bytearray()
            q = value_start
            while buf[q] != _NL:
                if buf[q] == _BS:
                    q += 1
                value.append(buf[q])
                q += 1
            out.append((buf[name_start:eq], bytes(value)))
        p = _find_next_line(buf, p, pend)
    return out


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GrubenvError(f"{what} {raw[:40]!r} is not valid UTF-8") from None


def list_grubenv(data: bytes) -> list[tuple[str, str]]:
    """Every variable in block order, duplicates included (what `grub-editenv list` prints)."""
    try:
        buf = bytes(data)
        _check_block(buf)
        return [(_decode(n, "name"), _decode(v, "value")) for n, v in _iterate(buf)]
    except GrubenvError:
        raise
    except Exception as e:  # nothing but our own error leaves a parser
        raise GrubenvError(f"cannot parse environment block: {e}") from e


def parse_grubenv(data: bytes) -> dict[str, str]:
    """The variables of a block; a repeated name keeps its last value (as grub's load_env)."""
    return dict(list_grubenv(data))


def _escaped(value: bytes) -> bytes:
    return value.replace(b"\\", b"\\\\").replace(b"\n", b"\\\n")


def _envblk_set(buf: bytearray, name: bytes, value: bytes) -> bool:
    """grub_envblk_set: False when there is no room (or the block is broken)."""
    nl = len(name)
    esc = _escaped(value)
    vl = len(esc)
    p = len(SIGNATURE)
    pend = len(buf)
    space = pend - 1
    while space >= 0 and buf[space] == _HASH:
        space -= 1
    if space < 0 or buf[space] != _NL:
        return False  # "Broken"
    space += 1
    while p + nl + 1 < space:
        if buf[p : p + nl] == name and buf[p + nl] == _EQ:
            p += nl + 1
            length = 0
            while p + length < pend and buf[p + length] != _NL:
                length += 2 if buf[p + length] == _BS else 1
            if p + length >= pend:
                return False  # "Broken"
            if pend - space < vl - length:
                return False  # no space
            if vl < length:
                buf[p + vl : pend - (length - vl)] = buf[p + length : pend]
                buf[space - (length - vl) : space] = b"#" * (length - vl)
            else:
                buf[p + vl : pend] = buf[p + length : pend - (vl - length)]
            buf[p : p + vl] = esc
            buf[p + vl] = _NL
            return True
        p = _find_next_line(buf, p, pend)
    if pend - space < nl + 1 + vl + 1:
        return False  # no space
    buf[space : space + nl + 1 + vl + 1] = name + b"=" + esc + b"\n"
    return True


def _envblk_delete(buf: bytearray, name: bytes) -> None:
    """grub_envblk_delete: removes the first "name=" line, pads the end with '#'."""
    nl = len(name)
    p = len(SIGNATURE)
    pend = len(buf)
    while p + nl + 1 < pend:
        if buf[p : p + nl] == name and buf[p + nl] == _EQ:
            length = nl + 1
            while p + length < pend:
                if buf[p + length] == _NL:
                    break
                length += 2 if buf[p + length] == _BS else 1
            if p + length >= pend:
                return  # "Broken"
            length += 1
            buf[p : pend - length] = buf[p + length : pend]
            buf[pend - length : pend] = b"#" * length
            return
        p = _find_next_line(buf, p, pend)


def check_name(name: str) -> bytes:
    """A variable name grub can store and read back; raises GrubenvError."""
    if not isinstance(name, str) or not name:
        raise GrubenvError("variable name must be a non-empty string")
    # '=' ends the name, a newline or backslash breaks the line framing, '#' starts padding/comments.
    if any(c in name for c in "=\n\\\0") or name.startswith("#"):
        raise GrubenvError(f"invalid variable name {name!r}")
    return name.encode("utf-8", "strict")


def check_value(value: str) -> bytes:
    """A value grub can store (C strings: no NUL); raises GrubenvError."""
    if not isinstance(value, str):
        raise GrubenvError("variable value must be a string")
    if "\0" in value:
        raise GrubenvError("variable value must not contain NUL")
    return value.encode("utf-8", "strict")


def update_grubenv(data: bytes, updates: Mapping[str, str | None]) -> bytes:
    """Apply updates (None deletes) as `grub-editenv set/unset` would; all or nothing.

    Every other byte of the block is kept; raises GrubenvError on an invalid block,
    name or value, and "environment block too small" on overflow.
    """
    try:
        buf = bytearray(bytes(data))
        _check_block(bytes(buf))
        items = list(updates.items())
        checked = [(check_name(k), None if v is None else check_value(v)) for k, v in items]
    except GrubenvError:
        raise
    except Exception as e:
        raise GrubenvError(f"cannot update environment block: {e}") from e
    for name, value in checked:
        if value is None:
            _envblk_delete(buf, name)
        elif not _envblk_set(buf, name, value):
            raise GrubenvError("environment block too small")
    return bytes(buf)
