"""packaging/rpm.spec: `make rpm` builds it from the tree; it installs what `make install` does, rpmlint-clean."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "rpm.spec"
RPMLINTRC = ROOT / "packaging" / "rpmlintrc"

EXPECTED_FILES = [
    "/usr/bin/ostreewatch",
    "/usr/libexec/ostreewatchd",
    "/usr/lib/systemd/system/ostreewatch.service",
    "/usr/lib/systemd/system-preset/90-ostreewatch.preset",
    "/usr/lib/systemd/catalog/ostreewatch.catalog",
    "/usr/share/dbus-1/system.d/org.ostreewatch1.conf",
    "/usr/share/dbus-1/system-services/org.ostreewatch1.service",
    "/usr/share/dbus-1/interfaces/org.ostreewatch1.Manager.xml",
    "/usr/share/polkit-1/actions/org.ostreewatch1.policy",
    "/usr/share/licenses/ostreewatch/LICENSE",
    "/usr/share/doc/ostreewatch/README.md",
    "/usr/share/doc/ostreewatch/hardening.md",
    "/usr/share/man/man1/ostreewatch.1.gz",
    "/usr/share/man/man8/ostreewatchd.8.gz",
    "/usr/share/bash-completion/completions/ostreewatch",
]
# Files that come from the tree unchanged (installed path -> source path).
COPIED = {
    "/usr/lib/systemd/system/ostreewatch.service": "units/ostreewatch.service",
    "/usr/lib/systemd/catalog/ostreewatch.catalog": "units/ostreewatch.catalog",
    "/usr/share/dbus-1/system.d/org.ostreewatch1.conf": "dbus/org.ostreewatch1.conf",
    "/usr/share/dbus-1/system-services/org.ostreewatch1.service": "dbus/org.ostreewatch1.service",
    "/usr/share/dbus-1/interfaces/org.ostreewatch1.Manager.xml": "dbus/org.ostreewatch1.Manager.xml",
    "/usr/share/polkit-1/actions/org.ostreewatch1.policy": "packaging/org.ostreewatch1.policy",
}


def package_version() -> str:
    m = re.search(r'(?m)^__version__ = "([^"]+)"$', (ROOT / "ostreewatch" / "__init__.py").read_text())
    assert m
    return m.group(1)


def spec_tag(name: str) -> str:
    m = re.search(rf"(?m)^{name}:\s*(\S+)\s*$", SPEC.read_text())
    assert m, name
    return m.group(1)


def rpm_build_env() -> dict[str, str]:
    """The environment rpmbuild runs in: not the developer's venv (the build uses the system python3)."""
    env = dict(os.environ, LC_ALL="C.UTF-8")
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    return env


class Build:
    """One `make rpm` (rpmbuild -ba of the checkout's files) in a private _topdir."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.version = spec_tag("Version")
        self.result = subprocess.run(
            ["make", "rpm", f"RPM_TOPDIR={top}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            env=rpm_build_env(),
        )
        self.log = self.result.stdout
        self.spec = top / "SPECS" / "ostreewatch.spec"
        self.rpms = sorted((top / "RPMS").rglob("*.rpm"))
        self.srpms = sorted((top / "SRPMS").glob("*.src.rpm"))

    def binary(self) -> Path:
        assert len(self.rpms) == 1, self.rpms
        return self.rpms[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    b = Build(tmp_path_factory.mktemp("rpmbuild"))
    assert b.result.returncode == 0, b.log[-6000:]
    return b


def rpm_query(pkg: Path, *args: str) -> str:
    return subprocess.run(
        ["rpm", "-qp", "--nosignature", *args, str(pkg)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_spec_version_is_the_package_version() -> None:
    assert spec_tag("Version") == package_version()


def test_builds_and_runs_check(build: Build) -> None:
    assert len(build.srpms) == 1
    assert build.binary().name == f"ostreewatch-{build.version}-1.noarch.rpm"
    # %check really ran: the import check, then pytest with at least one test passing.
    assert "+ PYTHONPATH=" in build.log
    assert re.search(r"\d+ passed", build.log), build.log[-3000:]
    assert not re.search(r"\d+ (failed|error)", build.log)


def test_file_list(build: Build) -> None:
    files = set(rpm_query(build.binary(), "-l").split())
    missing = [f for f in EXPECTED_FILES if f not in files]
    assert not missing, missing
    site = [f for f in files if re.search(r"/(site|dist)-packages/ostreewatch/daemon\.py$", f)]
    assert site, sorted(files)
    assert any(re.search(r"ostreewatch-[^/]*\.dist-info/METADATA$", f) for f in files)
    # No console script for the daemon left in bindir, nothing under /usr/local.
    assert "/usr/bin/ostreewatchd" not in files
    assert not [f for f in files if f.startswith("/usr/local")]


def test_installed_files_are_the_tree_files(build: Build, tmp_path: Path) -> None:
    unpack(build.binary(), tmp_path)
    for installed, source in COPIED.items():
        assert (tmp_path / installed.lstrip("/")).read_bytes() == (ROOT / source).read_bytes(), installed
    unit = (tmp_path / "usr/lib/systemd/system/ostreewatch.service").read_text()
    exec_start = re.search(r"(?m)^ExecStart=(\S+)", unit).group(1)
    daemon = tmp_path / exec_start.lstrip("/")  # the unit starts what the package installs
    assert os.access(daemon, os.X_OK)
    first = daemon.read_text().splitlines()[0]
    assert first.startswith("#!/usr/bin/python3"), first
    assert "ostreewatch.daemon" in daemon.read_text()


def unpack(rpm: Path, dest: Path) -> None:
    cpio = subprocess.run(
        f"rpm2cpio '{rpm}' | cpio -idm --quiet", shell=True, cwd=dest, capture_output=True, timeout=60
    )
    assert cpio.returncode == 0, cpio.stderr


def test_the_rpm_holds_what_make_install_lays_out(build: Build, tmp_path: Path) -> None:
    """Same paths, bytes and modes as `make install` with the spec's variables (.pyc and RECORD included)."""
    daemon_py = [f for f in rpm_query(build.binary(), "-l").split() if f.endswith("/ostreewatch/daemon.py")]
    site = daemon_py[0].rsplit("/ostreewatch/", 1)[0]  # the spec's python3_sitelib
    dest = tmp_path / "make-install"
    r = subprocess.run(
        ["make", "install", f"DESTDIR={dest}", "PREFIX=/usr", "PYTHON=/usr/bin/python3", f"PYTHON_SITEDIR={site}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=rpm_build_env(),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    unpacked = tmp_path / "rpm"
    unpacked.mkdir()
    unpack(build.binary(), unpacked)

    def files(root: Path) -> dict[str, tuple[bytes, int]]:
        return {
            "/" + str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o7777)
            for p in root.rglob("*")
            if p.is_file()
        }

    in_rpm, installed = files(unpacked), files(dest)
    assert sorted(in_rpm) == sorted(installed)
    differ = [f for f in in_rpm if in_rpm[f] != installed[f]]
    assert not differ, differ
    listed = {ln for ln in rpm_query(build.binary(), "--qf", "[%{FILENAMES} %{FILEMODES:perms}\\n]").splitlines()}
    assert {ln.split()[0] for ln in listed if not ln.split()[1].startswith("d")} == set(in_rpm)


def test_requires_and_scriptlets(build: Build) -> None:
    requires = rpm_query(build.binary(), "--requires")
    for dep in ("python3-dbus-next", "python3-systemd", "python3-inotify"):
        assert re.search(rf"(?m)^{dep}\b", requires), requires
    scripts = rpm_query(build.binary(), "--scripts")
    assert "preset ostreewatch.service" in scripts
    assert "disable --now ostreewatch.service" in scripts
    assert "try-restart ostreewatch.service" in scripts


def rpmlint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["rpmlint", "-r", str(RPMLINTRC), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def lint_counts(out: str) -> dict[str, int]:
    m = re.search(r"(\d+) packages and (\d+) specfiles checked; (\d+) errors, (\d+) warnings", out)
    assert m, out
    return {"errors": int(m.group(3)), "warnings": int(m.group(4))}


def test_rpmlint_clean_with_documented_filters(build: Build) -> None:
    result = rpmlint(build.spec, *build.srpms, *build.rpms)
    counts = lint_counts(result.stdout)
    assert counts["errors"] == 0, result.stdout
    assert counts["warnings"] == 0, result.stdout


def test_rpmlintrc_filters_are_documented() -> None:
    """Every filter has a comment right above it that says why."""
    lines = RPMLINTRC.read_text().splitlines()
    filters = [i for i, ln in enumerate(lines) if ln.startswith("addFilter(")]
    assert filters, "no filters: then delete the file"
    for i in filters:
        assert lines[i - 1].lstrip().startswith("#"), f"undocumented filter: {lines[i]}"


def test_readme_names_the_rpm_built(build: Build) -> None:
    """README's "Install on a host" names the file `make rpm` writes (it moves with the version)."""
    readme = (ROOT / "README.md").read_text()
    assert set(re.findall(r"ostreewatch-\d[^ /]*\.noarch\.rpm", readme)) == {build.binary().name}
    assert f"build/rpm/RPMS/noarch/{build.binary().name}" in readme
