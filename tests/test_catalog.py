"""The journal catalog: one entry per MESSAGE_ID in the code, accepted by journalctl."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import ostreewatch.journal

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "units" / "ostreewatch.catalog"
ID_LINE = re.compile(r"^-- ([0-9a-fA-F]{32})(?: .*)?$")


def code_ids() -> dict[str, str]:
    """MESSAGE_ID_* constants of ostreewatch.journal: id -> constant name."""
    ids = {}
    for name in dir(ostreewatch.journal):
        if name.startswith("MESSAGE_ID_"):
            value = getattr(ostreewatch.journal, name)
            assert isinstance(value, str), name
            ids[value] = name
    return ids


def catalog_entries(text: str) -> dict[str, list[str]]:
    """Catalog text -> {id: lines of the entry (headers and body)}."""
    entries: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        m = ID_LINE.match(line)
        if m:
            assert m.group(1) not in entries, f"duplicate catalog id {m.group(1)}"
            current = entries.setdefault(m.group(1), [])
        elif entries:
            current.append(line)
    return entries


def update_catalog(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """Install TEXT as the catalog under a fresh --root and run --update-catalog."""
    cat_dir = tmp_path / "usr/lib/systemd/catalog"
    cat_dir.mkdir(parents=True, exist_ok=True)
    (cat_dir / "ostreewatch.catalog").write_text(text)
    return subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--update-catalog"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.unit
def test_every_code_id_has_an_entry_and_back() -> None:
    ids = code_ids()
    assert len(ids) >= 6, "journal.py should define the MESSAGE_ID_* constants"
    for value, name in ids.items():
        assert re.fullmatch(r"[0-9a-f]{32}", value), f"{name} is not a 128-bit id: {value!r}"
    entries = catalog_entries(CATALOG.read_text())
    missing = {name for value, name in ids.items() if value not in entries}
    extra = set(entries) - set(ids)
    assert not missing, f"MESSAGE_IDs without a catalog entry: {sorted(missing)}"
    assert not extra, f"catalog entries for ids the code does not write: {sorted(extra)}"


@pytest.mark.unit
def test_every_entry_has_subject_defined_by_documentation_and_advice() -> None:
    for msg_id, lines in catalog_entries(CATALOG.read_text()).items():
        headers: dict[str, list[str]] = {}
        body: list[str] = []
        in_body = False
        for line in lines:
            if not in_body and line.strip() == "":
                in_body = True
                continue
            if in_body:
                body.append(line)
            else:
                key, sep, value = line.partition(":")
                assert sep, f"{msg_id}: header line without ':': {line!r}"
                headers.setdefault(key, []).append(value.strip())
        assert headers.get("Subject", [""])[0], f"{msg_id}: no Subject"
        assert headers.get("Defined-By") == ["ostreewatch"], f"{msg_id}: Defined-By"
        assert headers.get("Documentation"), f"{msg_id}: no Documentation"
        text = " ".join(body).strip()
        # What it means and what to do: at least a couple of sentences.
        assert len(text) > 120, f"{msg_id}: body too short: {text!r}"


def test_journalctl_update_catalog_accepts_it(tmp_path: Path) -> None:
    result = update_catalog(tmp_path, CATALOG.read_text())
    assert result.returncode == 0, result.stderr
    assert "Failed" not in result.stderr and "Invalid" not in result.stderr, result.stderr
    database = tmp_path / "var/lib/systemd/catalog/database"
    assert database.is_file() and database.stat().st_size > 0
    listed = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--list-catalog"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    listed_ids = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert listed_ids == set(code_ids()), listed
    # The text journalctl -x would show comes back with its Subject.
    some_id = ostreewatch.journal.MESSAGE_ID_STARTED
    dump = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--dump-catalog", some_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert dump.startswith("-- " + some_id)
    assert "Subject: ostreewatch @OSTREEWATCH_VERSION@ started" in dump


def test_a_broken_catalog_is_refused(tmp_path: Path) -> None:
    """The check above can fail: journalctl rejects text before the first id."""
    result = update_catalog(tmp_path, "Subject: no id line\n\n" + CATALOG.read_text())
    assert result.returncode != 0
    assert not (tmp_path / "var/lib/systemd/catalog/database").exists()


@pytest.mark.unit
def test_catalog_is_utf8_and_ends_with_newline() -> None:
    data = CATALOG.read_bytes()
    data.decode("utf-8")
    assert data.endswith(b"\n")


@pytest.mark.unit
def test_substituted_fields_are_fields_the_code_writes() -> None:
    """Every @FIELD@ in an entry is a field name journal.py writes (else -x shows it raw)."""
    source = Path(ostreewatch.journal.__file__).read_text()
    for msg_id, lines in catalog_entries(CATALOG.read_text()).items():
        for name in re.findall(r"@([A-Za-z0-9_]+)@", "\n".join(lines)):
            assert f'"{name}"' in source, f"{msg_id}: @{name}@ is not a field journal.py writes"
