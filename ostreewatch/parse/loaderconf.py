"""systemd-boot's loader/loader.conf: parse, rewrite the `default` line, match its glob.

References: systemd src/boot/efi/boot.c (config_defaults_load_from_file,
config_entry_find/efi_fnmatch) and src/shared/bootspec.c (boot_loader_read_conf).
"""

from __future__ import annotations

import re

from ostreewatch._record import frozen
from ostreewatch.errors import LoaderConfError
from ostreewatch.parse import checked_text
from ostreewatch.parse.bls import split_boot_counting

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from collections.abc import Sequence

_WHITESPACE = " \t\n\r"

# Known keys and their attribute names.
KEYS: dict[str, str] = {
    "default": "default",
    "timeout": "timeout",
    "console-mode": "console_mode",
    "editor": "editor",
    "auto-entries": "auto_entries",
    "auto-firmware": "auto_firmware",
    "auto-reboot": "auto_reboot",
    "auto-poweroff": "auto_poweroff",
    "random-seed-mode": "random_seed_mode",
    "beep": "beep",
    "reboot-for-bitlocker": "reboot_for_bitlocker",
    "reboot-on-error": "reboot_on_error",
    "secure-boot-enroll": "secure_boot_enroll",
    "preferred-profile": "preferred_profile",
}


@frozen
class LoaderConf:
    """Values as written (None when absent; a repeated key: the last wins)."""

    default: str | None = None
    timeout: str | None = None
    console_mode: str | None = None
    editor: str | None = None
    auto_entries: str | None = None
    auto_firmware: str | None = None
    auto_reboot: str | None = None
    auto_poweroff: str | None = None
    random_seed_mode: str | None = None
    beep: str | None = None
    reboot_for_bitlocker: str | None = None
    reboot_on_error: str | None = None
    secure_boot_enroll: str | None = None
    preferred_profile: str | None = None
    extra: tuple[tuple[str, str], ...] = ()  # unknown keys, in file order
    lines: tuple[str, ...] = ()  # the raw lines, line endings kept


def _key_value(line: str) -> tuple[str, str] | None:
    """(key, value) of a setting line; None for blank, comment or value-less lines."""
    s = line.strip(_WHITESPACE)
    if not s or s.startswith("#"):
        return None
    n = 0
    while n < len(s) and s[n] not in _WHITESPACE:
        n += 1
    key, value = s[:n], s[n:].strip(_WHITESPACE)
    if not value:
        return None  # bootctl: "Bad syntax", ignored
    # sd-boot drops one pair of surrounding double quotes (line_get_key_value);
    # bootctl 252 keeps them (so its pattern then matches nothing): sd-boot boots.
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    return key, value


def _split_lines(text: str) -> list[str]:
    """Lines split on "\\n" only, endings kept (str.splitlines also splits on \\f, \\x1c...)."""
    parts = text.split("\n")
    out = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _check_text(text: str) -> str:
    return checked_text(text, "loader.conf", LoaderConfError)


def parse_loader_conf(text: str) -> LoaderConf:
    """Parse loader.conf text; raises LoaderConfError for non-text input."""
    try:
        _check_text(text)
        values: dict[str, str] = {}
        extra: list[tuple[str, str]] = []
        lines = tuple(_split_lines(text))
        for line in text.split("\n"):
            kv = _key_value(line)
            if kv is None:
                continue
            key, value = kv
            if key in KEYS:
                values[KEYS[key]] = value
            else:
                extra.append((key, value))
        return LoaderConf(extra=tuple(extra), lines=lines, **values)
    except LoaderConfError:
        raise
    except Exception as e:  # nothing but our own error leaves a parser
        raise LoaderConfError(f"cannot parse loader.conf: {e}") from e


def check_default_value(value: str) -> str:
    """A value that can stand on a `default` line and read back identically."""
    if not isinstance(value, str) or not value:
        raise LoaderConfError("default must be a non-empty string")
    if any(c in value for c in "\n\r\0") or value != value.strip(_WHITESPACE):
        raise LoaderConfError(f"invalid default value {value!r}")
    if value[0] == '"' and value[-1] == '"':
        raise LoaderConfError("default value must not be quoted")
    return value


def set_default(text: str, value: str | None) -> str:
    """Rewrite the effective `default` line (append one if missing; None removes them all).

    Every other line, comment and line ending is kept byte for byte.
    """
    try:
        _check_text(text)
        if value is not None:
            check_default_value(value)
        lines = _split_lines(text)
        idx = [i for i, line in enumerate(lines) if (kv := _key_value(line)) is not None and kv[0] == "default"]
        if value is None:
            for i in reversed(idx):
                del lines[i]
            return "".join(lines)
        if idx:
            i = idx[-1]  # the last `default` line is the one that counts
            old = lines[i]
            body = old.rstrip("\r\n")
            ending = old[len(body) :]
            indent = body[: len(body) - len(body.lstrip(_WHITESPACE))]
            lines[i] = f"{indent}default {value}{ending}"
            return "".join(lines)
        out = "".join(lines)
        if out and not out.endswith("\n"):
            out += "\r\n" if lines[-1].endswith("\r") else "\n"
        return out + f"default {value}\n"
    except LoaderConfError:
        raise
    except Exception as e:
        raise LoaderConfError(f"cannot rewrite loader.conf: {e}") from e


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """fnmatch(3) without flags, as a regex: * ? [...] [!...] and backslash escapes."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            j = i
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape("["))  # no closing bracket: a literal '['
                continue
            body = pattern[i:j]
            i = j + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            parts = [re.escape(ch) if ch != "-" else "-" for ch in body]
            if parts and parts[0] == "-":
                parts[0] = "\\-"
            if parts and parts[-1] == "-":
                parts[-1] = "\\-"
            out.append("[" + ("^" if negate else "") + "".join(parts) + "]")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def match_default(pattern: str, entry_files: Sequence[str]) -> str | None:
    """The first entry file (in the given boot order) whose id, `.conf` included and
    boot-counting suffix dropped, matches the glob case-insensitively (bootctl 252's
    boot_config_find: fnmatch(FNM_CASEFOLD), first match wins); None when none does."""
    try:
        if not isinstance(pattern, str) or not pattern:
            return None
        rx = _glob_to_regex(pattern)
        for name in entry_files:
            # The id bootctl matches keeps ".conf" but not the boot-counting suffix.
            ident, _, _ = split_boot_counting(name)
            if name.endswith(".conf"):
                ident += ".conf"
            if rx.fullmatch(ident):
                return name
        return None
    except Exception as e:
        raise LoaderConfError(f"cannot match default pattern {pattern!r}: {e}") from e
