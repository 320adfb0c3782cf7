"""`make install` into a temp DESTDIR: the layout, the byte-compiled package, the version, the man pages.

The command is the README's own ("Install on a host"), with a DESTDIR added. The
installed copy runs with `python3 -I` and the installed site dir put first on
sys.path by hand (-I ignores PYTHONPATH): the checkout cannot be what answers.
The PYTHON_CHROOT case installs into an overlay of the cached sid tree (a newer
python than the host's, as the VM rig's tree) and checks there.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import os
import re
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.fixtures import trees

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's; root's PATH python3 here is pyenv's
SITE = "/usr/lib/python3/dist-packages"
VERSION = re.search(r'(?m)^__version__ = "([^"]+)"$', (ROOT / "ostreewatch/__init__.py").read_text()).group(1)  # type: ignore[union-attr]

# Every file make install lays out but the package's own (checked against the checkout below).
LAYOUT = {
    "/usr/bin/ostreewatch",
    "/usr/libexec/ostreewatchd",
    "/usr/lib/systemd/system/ostreewatch.service",
    "/usr/lib/systemd/system-preset/90-ostreewatch.preset",
    "/usr/lib/systemd/catalog/ostreewatch.catalog",
    "/usr/share/dbus-1/system.d/org.ostreewatch1.conf",
    "/usr/share/dbus-1/system-services/org.ostreewatch1.service",
    "/usr/share/dbus-1/interfaces/org.ostreewatch1.Manager.xml",
    "/usr/share/polkit-1/actions/org.ostreewatch1.policy",
    "/usr/share/man/man1/ostreewatch.1.gz",
    "/usr/share/man/man8/ostreewatchd.8.gz",
    "/usr/share/bash-completion/completions/ostreewatch",
    "/usr/share/licenses/ostreewatch/LICENSE",
    "/usr/share/doc/ostreewatch/README.md",
    "/usr/share/doc/ostreewatch/hardening.md",
    "/usr/share/doc/ostreewatch/fleet.md",
    "/usr/share/doc/ostreewatch/logind.md",
    "/usr/share/doc/ostreewatch/contrib/status/ostreewatch-changed.path",
    "/usr/share/doc/ostreewatch/contrib/logind/ostreewatch-reboot-entry.service",
    "/usr/share/doc/ostreewatch/contrib/logind/ostreewatch.conf.example",
    "/usr/share/doc/ostreewatch/contrib/status/ostreewatch-changed.service",
    "/usr/share/doc/ostreewatch/boot-outcome.md",
    "/usr/share/doc/ostreewatch/contrib/prometheus/ostreewatch.rules.yml",
    "/usr/share/doc/ostreewatch/contrib/prometheus/ostreewatch.rules.test.yml",
    "/usr/share/doc/ostreewatch/ostreewatch.service.d/textfile.conf.example",
}
DIST_INFO = {"METADATA", "WHEEL", "RECORD", "INSTALLER", "entry_points.txt", "top_level.txt", "LICENSE"}


def readme_install_command() -> list[str]:
    """The README's `make install` line for other distributions, as words."""
    text = (ROOT / "README.md").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("make install ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def make_install(destdir: Path, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [*readme_install_command(), f"DESTDIR={destdir}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def layout(destdir: Path) -> set[str]:
    return {"/" + str(p.relative_to(destdir)) for p in destdir.rglob("*") if p.is_file() or p.is_symlink()}


def package_sources() -> set[str]:
    """The package's files in the checkout (no bytecode), as installed under SITE."""
    return {
        f"{SITE}/{p.relative_to(ROOT)}"
        for p in (ROOT / "ostreewatch").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def run_installed(destdir: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """The installed script run by the system python in isolated mode, the installed site dir first."""
    site = str(destdir) + SITE
    code = (
        "import runpy, sys; "
        f"sys.path.insert(0, {site!r}); sys.argv = [{script!r}, *sys.argv[1:]]; "
        f"runpy.run_path({str(destdir) + script!r}, run_name='__main__')"
    )
    return subprocess.run([SYSTEM_PYTHON, "-I", "-c", code, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    make_install(dest)
    return dest


def test_the_readme_command_is_the_vm_rig_interface() -> None:
    words = readme_install_command()
    assert words[:2] == ["make", "install"]
    assert f"PYTHON={SYSTEM_PYTHON}" in words and f"PYTHON_SITEDIR={SITE}" in words and "PREFIX=/usr" in words


def test_file_list(installed: Path) -> None:
    files = layout(installed)
    pyc = {f for f in files if f.endswith(".pyc")}
    dist_info = {f for f in files if f.startswith(f"{SITE}/ostreewatch-{VERSION}.dist-info/")}
    assert {f.rsplit("/", 1)[1] for f in dist_info} == DIST_INFO
    assert files - pyc - dist_info == LAYOUT | package_sources()
    assert "/usr/bin/ostreewatchd" not in files


def test_modes(installed: Path) -> None:
    for f in layout(installed):
        mode = (installed / f.lstrip("/")).stat().st_mode & 0o7777
        assert mode == (0o755 if f in ("/usr/bin/ostreewatch", "/usr/libexec/ostreewatchd") else 0o644), (f, oct(mode))


def _tag_of(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True)
    return out.stdout.decode().strip()


def test_every_module_has_a_valid_checked_hash_pyc(installed: Path) -> None:
    """Each .py has its .pyc for the system python, in checked-hash mode with the source's hash."""
    tag = _tag_of(SYSTEM_PYTHON)
    sources = sorted((installed / SITE.lstrip("/") / "ostreewatch").rglob("*.py"))
    assert len(sources) > 20
    for src in sources:
        pyc = src.parent / "__pycache__" / f"{src.stem}.{tag}.pyc"
        data = pyc.read_bytes()
        flags = int.from_bytes(data[4:8], "little")
        assert flags == 0b11, (pyc, flags)  # hash-based (bit 0), checked (bit 1)
        assert data[8:16] == importlib.util.source_hash(src.read_bytes()), pyc


def test_pyc_stay_valid_whatever_the_mtimes(installed: Path) -> None:
    """An OSTree commit sets every mtime to 0: importing then must use the .pyc as they are.

    A timestamp-based .pyc would be stale and rewritten (root can write here): none may change.
    """
    site = installed / SITE.lstrip("/")
    for p in site.rglob("*.py"):
        os.utime(p, (0, 0))
    before = {p: p.read_bytes() for p in site.rglob("*.pyc")}
    code = (
        "import importlib, pkgutil, sys; "
        f"sys.path.insert(0, {str(site)!r}); import ostreewatch as p; "
        f"assert p.__file__.startswith({str(site)!r}), p.__file__; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(p.__path__, 'ostreewatch.')]"
    )
    r = subprocess.run([SYSTEM_PYTHON, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    after = {p: p.read_bytes() for p in site.rglob("*.pyc")}
    assert after == before


def test_record_lists_every_file_with_its_hash(installed: Path) -> None:
    site = installed / SITE.lstrip("/")
    record = site / f"ostreewatch-{VERSION}.dist-info" / "RECORD"
    rows = list(csv.reader(record.read_text().splitlines()))
    listed = {os.path.normpath(os.path.join(SITE, r[0])) for r in rows}
    owned = {f for f in layout(installed) if f.startswith(SITE + "/")} | {
        "/usr/bin/ostreewatch",
        "/usr/libexec/ostreewatchd",
    }
    assert listed == owned
    for path, digest, size in rows:
        data = (site / path).read_bytes()
        if path.endswith("/RECORD"):
            assert digest == size == ""
            continue
        b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={b64}" and int(size) == len(data), path


@pytest.mark.parametrize(
    "script,prog", [("/usr/bin/ostreewatch", "ostreewatch"), ("/usr/libexec/ostreewatchd", "ostreewatchd")]
)
def test_version_of_the_installed_copy(installed: Path, script: str, prog: str) -> None:
    r = run_installed(installed, script, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{prog} {VERSION}\n"


def test_metadata_version(installed: Path) -> None:
    site = str(installed) + SITE
    code = f"import sys; sys.path.insert(0, {site!r}); import importlib.metadata as m; print(m.version('ostreewatch'))"
    r = subprocess.run([SYSTEM_PYTHON, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout == f"{VERSION}\n", r.stderr


def test_the_units_exec_start_is_installed(installed: Path) -> None:
    unit = (installed / "usr/lib/systemd/system/ostreewatch.service").read_text()
    assert unit == (ROOT / "units/ostreewatch.service").read_text()  # PREFIX=/usr: unchanged
    exec_start = re.search(r"(?m)^ExecStart=(\S+)", unit).group(1)  # type: ignore[union-attr]
    daemon = installed / exec_start.lstrip("/")
    assert os.access(daemon, os.X_OK)
    shebang = daemon.read_text().splitlines()[0]
    assert shebang == f"#!{SYSTEM_PYTHON}"


def test_another_prefix_moves_the_units_paths(tmp_path: Path) -> None:
    make_install(tmp_path, "PREFIX=/usr/local")
    unit = (tmp_path / "usr/local/lib/systemd/system/ostreewatch.service").read_text()
    assert re.search(r"(?m)^ExecStart=/usr/local/libexec/ostreewatchd$", unit)
    assert "file:/usr/local/share/doc/ostreewatch/hardening.md" in unit
    assert os.access(tmp_path / "usr/local/libexec/ostreewatchd", os.X_OK)


def test_reinstall_removes_what_the_previous_install_recorded(tmp_path: Path) -> None:
    make_install(tmp_path)
    site = tmp_path / SITE.lstrip("/")
    gone = site / "ostreewatch" / "retired_module.py"  # a module a previous version had
    gone.write_text("")
    with open(site / f"ostreewatch-{VERSION}.dist-info" / "RECORD", "a") as f:
        f.write("ostreewatch/retired_module.py,,\n")
    make_install(tmp_path)
    assert not gone.exists()
    assert (site / "ostreewatch" / "daemon.py").is_file()


def test_python_chroot_compiles_with_the_trees_python() -> None:
    """PYTHON_CHROOT=TREE into an overlay of the cached sid tree, as the VM rig calls it (PYTHON: the default)."""
    args = ["install", 'DESTDIR="$M"', "PREFIX=/usr", f"PYTHON_SITEDIR={SITE}", 'PYTHON_CHROOT="$M"']
    setup = f"make -C {shlex.quote(str(ROOT))} -s {' '.join(args)} >&2"
    check = textwrap.dedent(f"""\
        import importlib.metadata as m, importlib.util, pathlib, sys
        import ostreewatch as p
        assert p.__file__.startswith({SITE!r}), p.__file__
        srcs = list(pathlib.Path(p.__file__).parent.rglob("*.py"))
        bad = []
        for s in srcs:
            d = pathlib.Path(importlib.util.cache_from_source(str(s))).read_bytes()
            if d[4:8] != b"\\x03\\0\\0\\0" or d[8:16] != importlib.util.source_hash(s.read_bytes()):
                bad.append(str(s))
        print(sys.implementation.cache_tag, m.version("ostreewatch"), len(srcs), bad)
    """)
    r = trees.run_in_tree(trees.SID, ["python3", "-I", "-c", check], setup=setup, userns=False)
    tag, version, count, bad = r.stdout.split(maxsplit=3)
    assert tag != _tag_of(SYSTEM_PYTHON)  # the point: the tree's python is another one
    assert (version, bad.strip()) == (VERSION, "[]")
    assert int(count) > 20
    r = trees.run_in_tree(trees.SID, ["head", "-1", "/usr/bin/ostreewatch"], setup=setup, userns=False)
    assert r.stdout == "#!/usr/bin/python3\n"


# --- man pages and completion, as installed ----------------------------------------


def _parser(prog: str):  # type: ignore[no-untyped-def]
    from ostreewatch import cli, daemon

    return {"ostreewatch": cli, "ostreewatchd": daemon}[prog].build_parser()


@pytest.mark.parametrize(
    "page,prog", [("man1/ostreewatch.1.gz", "ostreewatch"), ("man8/ostreewatchd.8.gz", "ostreewatchd")]
)
def test_man_page_renders_without_warnings_and_names_every_option(installed: Path, page: str, prog: str) -> None:
    path = installed / "usr/share/man" / page
    r = subprocess.run(
        ["man", "--warnings", "-l", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, MANWIDTH="100", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8"),
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = r.stdout
    assert re.search(rf"(?m)^NAME\n\s+{prog} - ", text), text[:500]
    assert f"ostreewatch {VERSION}" in text
    parsers = [_parser(prog)]
    for action in parsers[0]._actions:
        if action.choices and hasattr(action, "_choices_actions"):
            for name, sub in action.choices.items():
                assert re.search(rf"(?m)^\s+{re.escape(name)}$", text), name  # a COMMANDS subsection
                parsers.append(sub)
    for p in parsers:
        for action in p._actions:
            for opt in action.option_strings:
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), (p.prog, opt)


def complete(installed: Path, line: str) -> list[str]:
    """What bash's completion of the installed script offers for LINE (the cursor at its end)."""
    words = line.split(" ")
    script = (
        f"source {shlex.quote(str(installed / 'usr/share/bash-completion/completions/ostreewatch'))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_ostreewatch; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    r = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return sorted(w for w in r.stdout.splitlines() if w)


def test_bash_completion(installed: Path) -> None:
    assert complete(installed, "ostreewatch ") == ["boots", "monitor", "set-default", "set-next", "status"]
    assert complete(installed, "ostreewatch set-") == ["set-default", "set-next"]
    assert complete(installed, "ostreewatch --") == ["--debug", "--help", "--version"]
    assert "--deployment" in complete(installed, "ostreewatch set-default --")
    assert "--deployment" not in complete(installed, "ostreewatch set-next --")
    assert complete(installed, "ostreewatch status --sample ") == ["rhcos", "silverblue"]
    assert complete(installed, "ostreewatch status --bus s") == ["session", "system"]
    assert complete(installed, "ostreewatch status --sysroot uni") == ["units"]  # directories, from the cwd
    assert "units/ostreewatch.service" in complete(installed, "ostreewatch status --cmdline units/")
