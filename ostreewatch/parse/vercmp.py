"""systemd's version comparison, ported exactly.

Port of ``strverscmp_improved()`` from systemd
src/fundamental/string-util-fundamental.c (used by bootctl and systemd-boot to
sort boot entries). Segments are numeric or alphabetic runs, optionally
prefixed by '~' (oldest), '-', '^' or '.'; any other character is a separator.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from collections.abc import Callable


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _is_alpha(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_valid_version_char(c: str) -> bool:
    return _is_digit(c) or _is_alpha(c) or c in "~-^."


def _cmp(x: object, y: object) -> int:
    return int((x > y) - (x < y))  # type: ignore[operator]


def _run_end(s: str, i: int, kind: Callable[[str], bool]) -> int:
    """The index after the run of KIND characters starting at I (the "\\0" sentinel ends any run)."""
    while kind(s[i]):
        i += 1
    return i


def strverscmp_improved(a: str | None, b: str | None) -> int:
    """Compare two version strings as systemd does: -1, 0 or 1 (None counts as "")."""
    a = a or ""
    b = b or ""
    # A NUL ends a C string: keep the port exact for strings holding one.
    a = a.split("\0", 1)[0]
    b = b.split("\0", 1)[0]
    # Sentinel "\0" plays the C terminator, so indexing never runs off the end.
    a += "\0"
    b += "\0"
    i = j = 0
    while True:
        while a[i] != "\0" and not _is_valid_version_char(a[i]):
            i += 1
        while b[j] != "\0" and not _is_valid_version_char(b[j]):
            j += 1

        if a[i] == "~" or b[j] == "~":
            r = _cmp(a[i] != "~", b[j] != "~")
            if r:
                return r
            i += 1
            j += 1

        if a[i] == "\0" or b[j] == "\0":
            return _cmp(a[i], b[j])

        for sep in "-^.":
            if a[i] == sep or b[j] == sep:
                r = _cmp(a[i] != sep, b[j] != sep)
                if r:
                    return r
                i += 1
                j += 1

        if _is_digit(a[i]) or _is_digit(b[j]):
            ii, jj = _run_end(a, i, _is_digit), _run_end(b, j, _is_digit)
            r = _cmp(i != ii, j != jj)
            if r:
                return r
            while a[i] == "0":
                i += 1
            while b[j] == "0":
                j += 1
            r = _cmp(ii - i, jj - j)
            if r:
                return r
            r = _cmp(a[i:ii], b[j:jj])
            if r:
                return r
        else:
            ii, jj = _run_end(a, i, _is_alpha), _run_end(b, j, _is_alpha)
            n = min(ii - i, jj - j)
            r = _cmp(a[i : i + n], b[j : j + n])
            if r:
                return r
            r = _cmp(ii - i, jj - j)
            if r:
                return r
        i = ii
        j = jj


def _isalnum(c: str) -> bool:
    return _is_digit(c) or _is_alpha(c)


def rpmvercmp(a: str | None, b: str | None) -> int:
    """rpm's version comparison as Fedora grub2's blscfg copies it: -1, 0 or 1.

    Port of vercmp() in rhboot/grub2 grub-core/commands/blscfg.c (rpmvercmp
    without rpm 4.15's '^' support: '^' is a plain separator there).
    """
    a = (a or "").split("\0", 1)[0]
    b = (b or "").split("\0", 1)[0]
    if a == b:
        return 0
    a += "\0"
    b += "\0"
    one = two = 0
    while a[one] != "\0" or b[two] != "\0":
        while a[one] != "\0" and not _isalnum(a[one]) and a[one] != "~":
            one += 1
        while b[two] != "\0" and not _isalnum(b[two]) and b[two] != "~":
            two += 1
        # A tilde sorts before everything else.
        if a[one] == "~" or b[two] == "~":
            if a[one] != "~":
                return 1
            if b[two] != "~":
                return -1
            one += 1
            two += 1
            continue
        if a[one] == "\0" or b[two] == "\0":
            break
        s1, s2 = one, two
        if _is_digit(a[s1]):
            while _is_digit(a[s1]):
                s1 += 1
            while _is_digit(b[s2]):
                s2 += 1
            isnum = True
        else:
            while _is_alpha(a[s1]):
                s1 += 1
            while _is_alpha(b[s2]):
                s2 += 1
            isnum = False
        if one == s1:
            return -1  # cannot happen: the first string has a segment here
        if two == s2:
            return 1 if isnum else -1  # numeric segments are newer than alphabetic ones
        seg1, seg2 = a[one:s1], b[two:s2]
        if isnum:
            seg1 = seg1.lstrip("0")
            seg2 = seg2.lstrip("0")
            if len(seg1) != len(seg2):
                return 1 if len(seg1) > len(seg2) else -1
        if seg1 != seg2:
            return 1 if seg1 > seg2 else -1
        one, two = s1, s2
    if a[one] == "\0" and b[two] == "\0":
        return 0
    return -1 if a[one] == "\0" else 1
