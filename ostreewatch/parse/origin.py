"""A deployment's .origin file: a GLib key file (GKeyFile syntax, parsed without GLib).

    [origin]
    refspec=fedora:fedora/x86_64/coreos/stable      (or container-image-reference=...)
    unlocked=development                             (optional: development|hotfix|transient)
    [libostree-transient]
    pinned=true
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from ostreewatch.errors import OriginError

# GLib's g_key_file_parse_value_as_string escapes.
_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


@dataclass(frozen=True)
class Origin:
    refspec: str = ""     # refspec, rpm-ostree's baserefspec, or the container image reference
    pinned: bool = False
    unlocked: str = ""    # "" = not unlocked


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


def parse_keyfile(text: str) -> Dict[str, Dict[str, str]]:
    """GKeyFile groups and keys (values unescaped; the last of a repeated key wins)."""
    if not isinstance(text, str):
        raise OriginError("origin must be text")
    if "\0" in text:
        raise OriginError("NUL character in key file")
    groups: Dict[str, Dict[str, str]] = {}
    current: Optional[Dict[str, str]] = None
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r").lstrip(" \t")  # GLib strips leading whitespace of lines
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            end = line.find("]")
            name = line[1:end] if end > 0 else ""
            if end < 0 or not name or "[" in name or line[end + 1:].strip(" \t"):
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
        current[key] = _unescape(value.lstrip(" \t"))
    return groups


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
        origin = groups.get("origin", {})
        refspec = (origin.get("refspec") or origin.get("baserefspec")
                   or origin.get("container-image-reference") or origin.get("container") or "")
        pinned_text = groups.get("libostree-transient", {}).get("pinned")
        pinned = _boolean(pinned_text.strip(" \t"), "pinned") if pinned_text is not None else False
        unlocked = origin.get("unlocked", "")
        return Origin(refspec=refspec, pinned=pinned, unlocked="" if unlocked == "none" else unlocked)
    except OriginError:
        raise
    except Exception as e:  # nothing but our own error leaves a parser
        raise OriginError(f"cannot parse origin: {e}") from e
