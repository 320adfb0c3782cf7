"""A deployment's .origin file: a GLib key file (GKeyFile syntax, parsed without GLib).

[origin]
refspec=fedora:fedora/x86_64/coreos/stable      (or container-image-reference=...)
unlocked=development                             (optional: development|hotfix|transient)
[libostree-transient]
pinned=true
"""

from __future__ import annotations

from ostreewatch._record import frozen
from ostreewatch.errors import OriginError
from ostreewatch.parse import checked_text

# GLib's g_key_file_parse_value_as_string escapes.
_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


@frozen
class Origin:
    refspec: str = ""  # refspec, rpm-ostree's baserefspec, or the container image reference
    pinned: bool = False
    unlocked: str = ""  # "" = not unlocked


def _unescape(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            if i + 1 >= len(value):
                raise OriginError("value ends with a backslash")
            n = value[i + 1]
            if n not in _ESCAPES:
                raise OriginError(f"invalid escape sequence \\{n}")
            out.append(_ESCAPES[n])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_keyfile(text: str) -> dict[str, dict[str, str]]:
    """GKeyFile groups and keys with raw (still escaped) values; the last of a repeated key wins.

    Follows g_key_file_load_from_data: lines split on "\\n" (a "\\r" before it dropped),
    leading blanks ignored, "#" comments, "[group]" headers, "key=value" with blanks
    around "=" dropped; localized keys ("key[de]") are skipped as g_key_file_get_keys does.
    """
    checked_text(text, "origin", OriginError, nul_in="key file")
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    lines = text.split("\n")
    for number, raw in enumerate(lines, 1):
        if number < len(lines) and raw.endswith("\r"):
            raw = raw[:-1]
        line = raw.lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            end = line.find("]")
            name = line[1:end] if end > 0 else ""
            if end < 0 or not name or "[" in name or line[end + 1 :].strip(" \t"):
                raise OriginError(f"line {number}: invalid group header")
            current = groups.setdefault(name, {})
            continue
        if "=" not in line:
            raise OriginError(f"line {number}: neither a group, a key nor a comment")
        if current is None:
            raise OriginError(f"line {number}: key outside any group")
        key, value = line.split("=", 1)
        key = key.rstrip(" \t")
        if not key:
            raise OriginError(f"line {number}: empty key")
        if "[" in key:
            continue  # a localized value
        current[key] = value.lstrip(" \t")
    return groups


def get_string(groups: dict[str, dict[str, str]], group: str, key: str) -> str | None:
    """A value unescaped as g_key_file_get_string does; None when absent.

    A bad escape is an error only for the key read, as in GLib."""
    raw = groups.get(group, {}).get(key)
    return None if raw is None else _unescape(raw)


def _boolean(value: str, what: str) -> bool:
    # g_key_file_parse_value_as_boolean accepts exactly these.
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise OriginError(f"{what}: {value!r} is not a boolean")


def parse_origin(text: str) -> Origin:
    """Parse an .origin file; raises OriginError."""
    try:
        groups = parse_keyfile(text)
        refspec = ""
        # rpm-ostree writes baserefspec for layered deployments; bootc/ostree-container
        # the container image reference.
        for key in ("refspec", "baserefspec", "container-image-reference", "container"):
            refspec = get_string(groups, "origin", key) or ""
            if refspec:
                break
        pinned_text = get_string(groups, "libostree-transient", "pinned")
        pinned = _boolean(pinned_text.strip(" \t"), "pinned") if pinned_text is not None else False
        unlocked = get_string(groups, "origin", "unlocked") or ""
        return Origin(refspec=refspec, pinned=pinned, unlocked="" if unlocked == "none" else unlocked)
    except OriginError:
        raise
    except Exception as e:  # nothing but our own error leaves a parser
        raise OriginError(f"cannot parse origin: {e}") from e
