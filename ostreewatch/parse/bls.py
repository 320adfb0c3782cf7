"""Boot Loader Specification Type #1 entries: parse one file, sort as systemd-boot does.

References: uapi-group boot_loader_specification.md; systemd src/shared/bootspec.c
(boot_entry_load_type1, boot_entry_compare) and src/boot/efi/boot.c (config_entry_compare).
"""

from __future__ import annotations

from ostreewatch._record import frozen
from ostreewatch.errors import BlsError
from ostreewatch.parse.vercmp import rpmvercmp
from ostreewatch.parse.vercmp import strverscmp_improved as _strverscmp_uncached

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from collections.abc import Iterable
    from functools import cmp_to_key as cmp_to_key  # re-exported: state.py sorts with it too
else:
    # functools' C half: `functools` itself imports collections (~2.5 ms before READY=1).
    cmp_to_key = __import__("_functools").cmp_to_key

# The daemon sorts the same file names at every rescan: remembering comparisons makes a
# rescan of 1,000 entries several times cheaper (about 10,000 comparisons per sort).
# A dict, not functools.lru_cache (see cmp_to_key above); emptied when full.
_VERSCMP_CACHE: dict[tuple[str, str], int] = {}
_VERSCMP_CACHE_MAX = 16384


def strverscmp_improved(a: str, b: str) -> int:
    """parse/vercmp.py's strverscmp_improved, remembered."""
    key = (a, b)
    result = _VERSCMP_CACHE.get(key)
    if result is None:
        if len(_VERSCMP_CACHE) >= _VERSCMP_CACHE_MAX:
            _VERSCMP_CACHE.clear()
        result = _VERSCMP_CACHE[key] = _strverscmp_uncached(a, b)
    return result


# systemd's WHITESPACE: the separators between key and value.
_WHITESPACE = " \t\n\r"
_UINT_MAX = 2**32 - 1


@frozen
class EntryKeys:
    """The keys of an entry that model.BootEntry publishes too: its first fields, in this order."""

    id: str
    file: str
    title: str = ""
    version: str = ""
    sort_key: str = ""
    machine_id: str = ""
    linux: str = ""
    initrd: tuple[str, ...] = ()
    options: str = ""  # all options lines joined by one space
    devicetree: str = ""
    architecture: str = ""


@frozen
class BlsEntry(EntryKeys):
    """An entry file as parsed: the published keys, then those only the parsers and the writer use."""

    efi: str = ""
    first_options: str = ""  # only the first options line (what grub's blscfg uses)
    devicetree_overlay: str = ""
    tries_left: int | None = None
    tries_done: int | None = None
    extra: tuple[tuple[str, str], ...] = ()  # unknown keys, in file order


def split_boot_counting(file_name: str) -> tuple[str, int | None, int | None]:
    """Split "NAME+LEFT[-DONE].conf" into (NAME, LEFT, DONE); the id also drops ".conf"."""
    if not isinstance(file_name, str):
        raise BlsError(f"entry file name must be text, not {type(file_name).__name__}")
    stem = file_name[:-5] if file_name.endswith(".conf") else file_name
    # (.*)\+([0-9]+)(?:-([0-9]+))? by hand (no `re` before READY=1): only the last "+" can start
    # the counters, since they hold no "+".
    name, plus, counters = stem.rpartition("+")
    left_text, dash, done_text = counters.partition("-")
    if not plus or not name or not _ascii_digits(left_text) or (dash and not _ascii_digits(done_text)):
        return stem, None, None
    left = int(left_text)
    done = int(done_text) if dash else None
    # systemd parses the counters as unsigned ints; an overflow means "no counting".
    if left > _UINT_MAX or (done is not None and done > _UINT_MAX):
        return stem, None, None
    return name, left, done


def _ascii_digits(text: str) -> bool:
    """[0-9]+ (str.isdigit alone takes other scripts' digits too)."""
    return text.isascii() and text.isdigit()


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-")


def valid_entry_file_name(file_name: str) -> bool:
    """Whether bootctl 252 accepts this entry file name (efi_loader_entry_name_valid:
    only [A-Za-z0-9_.+-]); it skips others with "Invalid loader entry name"."""
    return file_name.endswith(".conf") and _NAME_CHARS.issuperset(file_name)


_SINGLE_KEYS = {
    "title": "title",
    "version": "version",
    "sort-key": "sort_key",
    "machine-id": "machine_id",
    "linux": "linux",
    "efi": "efi",
    "devicetree": "devicetree",
    "architecture": "architecture",
}


def parse_entry(file_name: str, data: bytes) -> BlsEntry:
    """Parse one entry file's bytes; raises BlsError for anything that is not an entry."""
    try:
        return _parse_entry(file_name, data)
    except BlsError:
        raise
    except Exception as e:  # never let anything else escape: bad input is an error, not a crash
        raise BlsError(f"{file_name}: cannot parse entry: {e}") from e


def _parse_entry(file_name: str, data: bytes) -> BlsEntry:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BlsError(f"{file_name}: entry data must be bytes")
    if not isinstance(file_name, str) or not file_name or "/" in file_name or "\0" in file_name:
        raise BlsError(f"invalid entry file name {file_name!r}")
    raw = bytes(data)
    if b"\0" in raw:
        raise BlsError(f"{file_name}: NUL byte in entry")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BlsError(f"{file_name}: not valid UTF-8 at byte {e.start}") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a BOM is not part of the first key

    ident, tries_left, tries_done = split_boot_counting(file_name)
    fields = {}
    initrd: list[str] = []
    options: list[str] = []
    overlays: list[str] = []
    extra: list[tuple[str, str]] = []
    # Split on "\n" only (as systemd's read_line); strip() then removes a CR of CRLF.
    for line in text.split("\n"):
        line = line.strip(_WHITESPACE)
        if not line or line.startswith("#"):
            continue
        n = 0
        while n < len(line) and line[n] not in _WHITESPACE:
            n += 1
        key = line[:n]
        value = line[n:].strip(_WHITESPACE)
        if not value:
            continue  # systemd: "Bad syntax", line ignored
        if key in _SINGLE_KEYS:
            fields[_SINGLE_KEYS[key]] = value  # a repeated single key: the last wins (systemd)
        elif key == "initrd":
            initrd.append(value)
        elif key == "options":
            options.append(value)
        elif key == "devicetree-overlay":
            overlays.extend(value.split())  # bootctl: repeatable, a whitespace-separated list
        else:
            extra.append((key, value))
    return BlsEntry(
        id=ident,
        file=file_name,
        initrd=tuple(initrd),
        options=" ".join(options),
        first_options=options[0] if options else "",
        devicetree_overlay=" ".join(overlays),
        tries_left=tries_left,
        tries_done=tries_done,
        extra=tuple(extra),
        **fields,
    )


def _sort_id(e: BlsEntry) -> str:
    return e.id + ".conf" if e.file.endswith(".conf") else e.id


def _compare(a: BlsEntry, b: BlsEntry) -> int:
    """bootctl 252's boot_entry_compare, checked against Debian 12's bootctl.

    Order: tries-left 0 last; entries with a sort-key first (by sort-key, then
    machine-id, then version descending); then ids descending, version-aware.
    Where versions differ: bootctl 252 leaves a full tie to qsort (unspecified);
    sd-boot 252 and newer bootctl break it by more tries left, then fewer tries
    done, which we do too. sd-boot case-folds ids (see the comment of
    config_entry_find in src/boot/efi/boot.c), bootctl 252 does not: we follow
    bootctl 252. Later bootctl versions compare ids without a UKI profile
    suffix, which Type #1 entries do not have.
    """
    # Entries with no tries left go last.
    r = (a.tries_left == 0) - (b.tries_left == 0)
    if r:
        return r
    # Entries with a sort-key before those without.
    r = (not a.sort_key) - (not b.sort_key)
    if r:
        return r
    if a.sort_key and b.sort_key:
        r = (a.sort_key > b.sort_key) - (a.sort_key < b.sort_key)
        if r:
            return r
        r = (a.machine_id > b.machine_id) - (a.machine_id < b.machine_id)
        if r:
            return r
        r = -strverscmp_improved(a.version, b.version)
        if r:
            return r
    # bootctl 252 compares ids that keep ".conf" but drop the counting suffix:
    # "a-1.conf" < "a.conf" while "a-1" > "a", so the suffix matters.
    r = -strverscmp_improved(_sort_id(a), _sort_id(b))
    if r:
        return r
    # Same id: the one with more tries left, then fewer tries done (sd-boot).
    if a.tries_left is not None and b.tries_left is not None:
        r = -((a.tries_left > b.tries_left) - (a.tries_left < b.tries_left))
        if r:
            return r
        ad = a.tries_done or 0
        bd = b.tries_done or 0
        r = (ad > bd) - (ad < bd)
        if r:
            return r
    # Last resort so the order never depends on input order.
    return -strverscmp_improved(a.file, b.file) or (a.file < b.file) - (a.file > b.file)


def sort_entries(entries: Iterable[BlsEntry]) -> list[BlsEntry]:
    """Entries in systemd-boot's order (the first is the default when nothing else says)."""
    return sorted(entries, key=cmp_to_key(_compare))


def _split_package_string(nvr: str) -> tuple[str, str | None, str | None]:
    """blscfg's split_package_string: NAME-VERSION-RELEASE split at the last two '-'."""
    name: str | None
    version: str | None
    release: str | None
    head, sep, tail = nvr.rpartition("-")
    if sep:
        nvr, release = head, tail
    else:
        release = None
    head, sep, tail = nvr.rpartition("-")
    if sep:
        name, version = head, tail
    else:
        name, version = nvr, None
    if version is None:
        version, release = release, None
    return name, version, release


def _grub_compare(a: BlsEntry, b: BlsEntry) -> int:
    """blscfg's bls_cmp: name, version, release of the file name, by rpm's vercmp."""
    na = _split_package_string(a.file[:-5] if a.file.endswith(".conf") else a.file)
    nb = _split_package_string(b.file[:-5] if b.file.endswith(".conf") else b.file)
    for x, y in zip(na, nb):
        r = rpmvercmp(x or "", y or "")
        if r:
            return r
    return 0


def sort_entries_grub(entries: Iterable[BlsEntry]) -> list[BlsEntry]:
    """Entries in the menu order of Fedora/RHEL grub2's blscfg (newest first).

    blscfg ignores sort-key and version: it splits the file name (less ".conf")
    as an rpm NAME-VERSION-RELEASE and compares the parts with rpm's vercmp
    (ostree issue 2961; rhboot/grub2 grub-core/commands/blscfg.c). Not modelled
    here: blscfg reads only the first `options` line (see first_options), stops
    reading a file at its first blank or value-less line, and skips entries
    without `linux`. Ties keep the input order.
    """
    return sorted(entries, key=cmp_to_key(_grub_compare_newest_first))


def _grub_compare_newest_first(a: BlsEntry, b: BlsEntry) -> int:
    return -_grub_compare(a, b)
