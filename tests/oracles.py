"""Real tools as oracles for the parsers: bootctl, grub-editenv, findmnt.

Reusable by every test module: `bootctl_list(esp_dir)`, `grub_editenv(...)`,
`findmnt_file(path)`, and `fuzz_settings()` for bounded hypothesis runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, settings

_BOOTCTL_SCRIPT = r"""
set -e
mount --bind "$1" "$1"
export SYSTEMD_RELAX_ESP_CHECKS=1
bootctl --no-pager --esp-path="$1" --json=short list
echo '@@@TEXT@@@'
bootctl --no-pager --esp-path="$1" list
"""


def bootctl_list(esp_dir: str, timeout: float = 60) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """Run `bootctl list` on ESP_DIR (with loader/entries and loader/loader.conf).

    Returns (entries as bootctl's JSON objects in bootctl's order, the id bootctl
    marks "(default)" or None). bootctl needs the ESP to be a mount point: it is
    bind-mounted on itself inside a private mount namespace that dies with the call.
    """
    env = dict(os.environ, SYSTEMD_PAGER="", SYSTEMD_COLORS="0", LC_ALL="C.UTF-8")
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BOOTCTL_SCRIPT, "sh", esp_dir],
        capture_output=True, env=env, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bootctl failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    out = proc.stdout.decode("utf-8")
    json_part, text_part = out.split("@@@TEXT@@@\n", 1)
    decoder = json.JSONDecoder()
    entries: List[Dict[str, Any]] = []
    pos = 0
    # --json=short prints one object per entry, back to back (not an array).
    while True:
        while pos < len(json_part) and json_part[pos].isspace():
            pos += 1
        if pos >= len(json_part):
            break
        obj, pos = decoder.raw_decode(json_part, pos)
        if isinstance(obj, list):
            entries.extend(obj)
        else:
            entries.append(obj)
    default_id: Optional[str] = None
    for block in text_part.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.strip().partition(": ")
            if sep:
                fields.setdefault(key, value)
        if "(default)" in fields.get("title", "") and "id" in fields:
            default_id = fields["id"]
    return entries, default_id


def write_esp(esp_dir: str, entries: Dict[str, bytes], loader_conf: Optional[str] = None) -> None:
    """Write entry files (name -> bytes) and an optional loader.conf under ESP_DIR."""
    entries_dir = os.path.join(esp_dir, "loader", "entries")
    os.makedirs(entries_dir, exist_ok=True)
    for name, data in entries.items():
        with open(os.path.join(entries_dir, name), "wb") as f:
            f.write(data)
    if loader_conf is not None:
        with open(os.path.join(esp_dir, "loader", "loader.conf"), "w", encoding="utf-8") as f:
            f.write(loader_conf)


def grub_editenv(path: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `grub-editenv PATH ARGS...` (bytes output)."""
    return subprocess.run(["grub-editenv", path, *args], capture_output=True, timeout=30, check=check)


def grub_editenv_list(path: str) -> bytes:
    """What `grub-editenv PATH list` prints: "name=value\\n" per variable, values unescaped."""
    return grub_editenv(path, "list").stdout


FINDMNT_COLUMNS = "ID,PARENT,MAJ:MIN,FSROOT,TARGET,SOURCE,FSTYPE,VFS-OPTIONS,FS-OPTIONS,OPT-FIELDS"


def findmnt_file(path: str) -> List[Dict[str, Any]]:
    """findmnt's reading of a mountinfo file (`--nofsroot`: SOURCE without "[root]")."""
    proc = subprocess.run(
        ["findmnt", "--nofsroot", "-J", "-l", "-F", path, "-o", FINDMNT_COLUMNS],
        capture_output=True, timeout=30, check=True,
    )
    if not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)["filesystems"]


def fuzz_settings(max_examples: int = 200, **kwargs: Any) -> settings:
    """Deterministic hypothesis settings; OSTREEWATCH_FUZZ_EXAMPLES=N runs N examples instead."""
    n = int(os.environ.get("OSTREEWATCH_FUZZ_EXAMPLES", "0") or 0)
    return settings(
        derandomize=True,
        max_examples=n if n > 0 else max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **kwargs,
    )


def run_ok(cmd: Sequence[str]) -> str:
    """Run a command, return its stdout as text (raises on failure)."""
    return subprocess.run(list(cmd), capture_output=True, timeout=60, check=True, text=True).stdout


# GLib (python3-gi from Debian's /usr/bin/python3, not the venv) as a GVariant oracle.
_GLIB_SCRIPT = r"""
import json, sys
from gi.repository import GLib

def plain(v):
    if isinstance(v, dict):
        return {"__dict__": [[plain(k), plain(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return {"__seq__": [plain(x) for x in v]}
    if isinstance(v, GLib.Variant):
        return plain(v.unpack())
    return v

out = []
for op, type_string, arg in json.load(sys.stdin):
    if op == "serialize":
        # Test-authored expressions; V("s", "x") builds a nested variant.
        value = eval(arg, {"V": GLib.Variant, "__builtins__": {}})
        gv = GLib.Variant(type_string, value)
        out.append(gv.get_data_as_bytes().get_data().hex())
    else:
        data = bytes.fromhex(arg)
        gv = GLib.Variant.new_from_bytes(GLib.VariantType.new(type_string), GLib.Bytes.new(data), False)
        normal = gv.is_normal_form()
        out.append([normal, plain(gv.unpack()) if normal else None])
json.dump(out, sys.stdout)
"""

GLIB_PYTHON = "/usr/bin/python3"


def glib_batch(requests: Sequence[Tuple[str, str, str]]) -> List[Any]:
    """Run GLib on many requests at once: ("serialize", type, python expression; V(...) is
    GLib.Variant) -> hex data;
    ("deserialize", type, hex) -> [is_normal_form, value as plain JSON]."""
    proc = subprocess.run([GLIB_PYTHON, "-c", _GLIB_SCRIPT], input=json.dumps(list(requests)),
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout)


def glib_serialize(type_string: str, literal: str) -> bytes:
    """GLib's serialization of a Python expression as a GVariant of TYPE_STRING."""
    return bytes.fromhex(glib_batch([("serialize", type_string, literal)])[0])


def plain_value(v: Any) -> Any:
    """Our parsed value in the JSON shape glib_batch returns (bytes as a list of ints)."""
    if isinstance(v, dict):
        return {"__dict__": [[plain_value(k), plain_value(x)] for k, x in v.items()]}
    if isinstance(v, bytes):
        return {"__seq__": list(v)}
    if isinstance(v, (list, tuple)):
        return {"__seq__": [plain_value(x) for x in v]}
    return v


_KEYFILE_SCRIPT = r"""
import json, sys
from gi.repository import GLib
out = []
for text in json.load(sys.stdin):
    kf = GLib.KeyFile()
    try:
        kf.load_from_data(text, len(text.encode()), GLib.KeyFileFlags.NONE)
    except GLib.Error as e:
        out.append({"error": e.message})
        continue
    groups = {}
    for g in kf.get_groups()[0]:
        keys = {}
        for k in kf.get_keys(g)[0]:
            try:
                keys[k] = kf.get_string(g, k)
            except GLib.Error as e:
                keys[k] = {"error": e.message}
        groups[g] = keys
    out.append({"groups": groups})
json.dump(out, sys.stdout)
"""


def glib_keyfile_batch(texts: Sequence[str]) -> List[Dict[str, Any]]:
    """GLib's GKeyFile reading of each text: {"groups": {group: {key: value}}} or {"error": msg};
    a value whose escapes GLib rejects is {"error": msg}."""
    proc = subprocess.run([GLIB_PYTHON, "-c", _KEYFILE_SCRIPT], input=json.dumps(list(texts)),
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout)
