"""/proc/PID/mountinfo lines (proc_pid_mountinfo(5)).

Fields: mount id, parent id, major:minor, root, mount point, per-mount options,
optional fields up to a lone "-", fstype, source, super options. The kernel
escapes space, tab, newline and backslash in paths as \\ooo (fs/proc_namespace.c
mangle()); we decode any \\ooo octal escape as libmount's unmangle() does.
"""

from __future__ import annotations

from ostreewatch._record import frozen
from ostreewatch.errors import MountinfoError

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from collections.abc import Iterable


@frozen
class MountInfo:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: str
    optional_fields: tuple[str, ...]
    fstype: str
    source: str
    super_options: str


def mangle(path: str) -> bytes:
    """A path escaped as the kernel writes it in mountinfo."""
    out = path.encode("utf-8", "surrogateescape")
    for ch in (b"\\", b" ", b"\t", b"\n"):
        out = out.replace(ch, b"\\%03o" % ch[0])
    return out


def _unmangle(field: bytes) -> str:
    if b"\\" in field:
        field = _unescape(field)
    return field.decode("utf-8")


def _unescape(field: bytes) -> bytes:
    """Every \\[0-3][0-7][0-7] as its byte, left to right (what re.sub did; no `re` before READY=1)."""
    out = bytearray()
    i, n = 0, len(field)
    while i < n:
        if (
            field[i] == 0x5C
            and i + 3 < n
            and 0x30 <= field[i + 1] <= 0x33
            and 0x30 <= field[i + 2] <= 0x37
            and 0x30 <= field[i + 3] <= 0x37
        ):
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def _number(text: bytes, what: str) -> int:
    if not text.isdigit():
        raise MountinfoError(f"bad {what} {text[:40]!r}")
    value = int(text)
    if value > 0xFFFFFFFF:
        raise MountinfoError(f"{what} out of range")
    return value


def parse_line(line: bytes) -> MountInfo:
    """Parse one mountinfo line (without its newline); raises MountinfoError."""
    try:
        return _parse_line(line)
    except MountinfoError:
        raise
    except UnicodeDecodeError as e:
        raise MountinfoError(f"not valid UTF-8 at byte {e.start}") from None
    except Exception as e:  # nothing but our own error leaves a parser
        raise MountinfoError(f"cannot parse line: {e}") from e


def _parse_line(line: bytes) -> MountInfo:
    fields = line.split(b" ")
    if len(fields) < 10:
        raise MountinfoError(f"too few fields in {line[:80]!r}")
    try:
        sep = fields.index(b"-", 6)
    except ValueError:
        raise MountinfoError(f"no separator '-' in {line[:80]!r}") from None
    if len(fields) != sep + 4:
        raise MountinfoError(f"expected 3 fields after '-' in {line[:80]!r}")
    dev = fields[2].split(b":")
    if len(dev) != 2:
        raise MountinfoError(f"bad major:minor {fields[2][:40]!r}")
    root = _unmangle(fields[3])
    mount_point = _unmangle(fields[4])
    if not root or not mount_point:
        raise MountinfoError(f"empty root or mount point in {line[:80]!r}")
    return MountInfo(
        mount_id=_number(fields[0], "mount id"),
        parent_id=_number(fields[1], "parent id"),
        major=_number(dev[0], "major"),
        minor=_number(dev[1], "minor"),
        root=root,
        mount_point=mount_point,
        options=_unmangle(fields[5]),
        optional_fields=tuple(_unmangle(f) for f in fields[6:sep] if f),
        fstype=_unmangle(fields[sep + 1]),
        source=_unmangle(fields[sep + 2]),
        super_options=_unmangle(fields[sep + 3]),
    )


def parse_mountinfo(
    data: bytes, mount_points: Iterable[str] | None = None
) -> tuple[tuple[MountInfo, ...], tuple[MountinfoError, ...]]:
    """Parse a whole mountinfo; bad lines are returned as errors, never raised.

    With ``mount_points``, lines for other mount points are skipped after a cheap
    split, before any decoding (mount storms: thousands of lines, several times a second).
    """
    mounts: list[MountInfo] = []
    errors: list[MountinfoError] = []
    try:
        raw = bytes(data)
    except Exception as e:  # noqa: BLE001 - the parser never raises: any odd input is a MountinfoError
        return (), (MountinfoError(f"mountinfo must be bytes: {e}"),)
    wanted: frozenset[bytes] | None = None
    if mount_points is not None:
        try:
            wanted = frozenset(mangle(p) for p in mount_points)
        except Exception as e:  # noqa: BLE001 - as above, for the filter
            return (), (MountinfoError(f"bad mount point filter: {e}"),)
    for number, line in enumerate(raw.split(b"\n"), 1):
        if not line:
            continue
        if wanted is not None:
            parts = line.split(b" ", 5)
            # A line too short to hold a mount point is still reported as bad.
            if len(parts) >= 6 and parts[4] not in wanted:
                continue
        try:
            mounts.append(parse_line(line))
        except MountinfoError as e:
            errors.append(MountinfoError(f"line {number}: {e}"))
    return tuple(mounts), tuple(errors)
