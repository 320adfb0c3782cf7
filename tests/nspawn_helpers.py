"""Boot the cached Debian tree with systemd as PID 1 (systemd-nspawn), ostreewatch installed.

DESIGN.md §4: `--register=no --keep-unit` are required here, nspawn runs in a
private mount namespace with a tmpfs on /run/systemd/nspawn, the tree is never
modified (`--volatile=overlay`), commands run inside with `nsenter --all`, and
the empty payload/ and supervisor/ cgroups nspawn leaves are removed after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tests.fixtures.sysroots import OstreeSysroot

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_TREE = Path(os.environ.get("OSTREEWATCH_NSPAWN_ROOT", "/var/cache/ostreewatch/bookworm-root"))
OSNAME = "testos"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# os-release as a plain OS ships it; the commits carry no `version` metadata, so the
# daemon's Deployment.version comes from os-release (test_nspawn edits VERSION there).
OS_RELEASE = 'NAME=Test\nID=testos\nVERSION="{v}"\nPRETTY_NAME="Test OS {v}"\n'


def build_sysroot(dest: Path) -> str:
    """Build a sysroot with two deployments at DEST; returns the default entry's ostree= value.

    Two commits, two deployments: a default and a rollback (the shared builder,
    tests/fixtures/sysroots.py: mapped root in a user namespace, DESIGN.md §4).
    """
    sr = OstreeSysroot(dest.parent, path=dest).init(OSNAME)
    for v in ("1", "2"):
        sr.commit(f"{OSNAME}/{v}", version=v, kver=f"6.1.0-{v}", osname=OSNAME, os_release=OS_RELEASE.format(v=v),
                  version_metadata=False, timestamp=f"2020-01-0{v}")
        sr.deploy(f"{OSNAME}/{v}", os=OSNAME, retain=False)
    # grub2 as grub2-mkconfig sets it up: an environment block and a grub.cfg that
    # reads saved_entry and next_entry, so the write methods have something to write.
    sr.write_grub()
    return default_ostree_arg(dest)


def grubenv_list(sysroot: Path) -> Dict[str, str]:
    """grub-editenv's own reading of the sysroot's grubenv (the oracle)."""
    out = subprocess.run(["grub-editenv", str(sysroot / "boot/grub2/grubenv"), "list"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def default_ostree_arg(sysroot: Path) -> str:
    """The ostree=... argument of the entry with the highest version (the default)."""
    best = (-1, "")
    for conf in (sysroot / "boot/loader/entries").glob("*.conf"):
        version, arg = -1, ""
        for line in conf.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "version":
                version = int(value.strip())
            elif key == "options":
                arg = next(w for w in value.split() if w.startswith("ostree="))
        best = max(best, (version, arg))
    if not best[1]:
        raise RuntimeError(f"no BLS entry with ostree= under {sysroot}/boot")
    return best[1]


LAUNCHER = """#!/usr/bin/python3
# ostreewatchd as the RPM installs it, running the checkout bound read-only at /opt/ostreewatch.
import sys
sys.path.insert(0, "/opt/ostreewatch")
from ostreewatch.daemon import main
sys.exit(main())
"""


def stage_install(stage: Path) -> List[str]:
    """Files the guest needs, staged under STAGE; returns nspawn --bind/--bind-ro options.

    The guest is Debian with python3-dbus-next, python3-systemd and
    python3-pyinotify; the project's own files are bound read-only where the
    RPM installs them, and the unit is enabled with its WantedBy= symlink.
    """
    stage.mkdir(parents=True, exist_ok=True)
    launcher = stage / "ostreewatchd"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    wants = stage / "local-fs.target.wants"
    wants.mkdir()
    (wants / "ostreewatch.service").symlink_to("/usr/lib/systemd/system/ostreewatch.service")
    binds = {
        launcher: "/usr/libexec/ostreewatchd",
        ROOT / "ostreewatch": "/opt/ostreewatch/ostreewatch",
        ROOT / "setup.cfg": "/opt/ostreewatch/setup.cfg",
        ROOT / "units/ostreewatch.service": "/usr/lib/systemd/system/ostreewatch.service",
        ROOT / "units/ostreewatch.catalog": "/usr/lib/systemd/catalog/ostreewatch.catalog",
        ROOT / "dbus/org.ostreewatch1.conf": "/usr/share/dbus-1/system.d/org.ostreewatch1.conf",
        ROOT / "dbus/org.ostreewatch1.service": "/usr/share/dbus-1/system-services/org.ostreewatch1.service",
        wants: "/etc/systemd/system/local-fs.target.wants",
    }
    for src in binds:
        if not src.exists():
            raise FileNotFoundError(f"{src} is needed in the container")
    return [f"--bind-ro={src}:{dst}" for src, dst in binds.items()]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


class Container:
    """One booted container; use as a context manager (always cleaned up)."""

    def __init__(self, workdir: Path, sysroot: Optional[Path], init_args: Sequence[str]) -> None:
        self.workdir = workdir
        self.sysroot = sysroot
        self.init_args = list(init_args)
        self.proc: Optional[subprocess.Popen] = None
        self.nspawn_pid = 0
        self.leader = 0
        self.log_path = workdir / "nspawn.log"
        self._cgroup_dirs = self._own_cgroup_dirs()

    # -- start / stop --

    def __enter__(self) -> "Container":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not (DEBIAN_TREE / "usr/lib/systemd/systemd").exists():
            raise RuntimeError(f"no Debian tree at {DEBIAN_TREE}: run scripts/setup-test-env.sh")
        options = stage_install(self.workdir / "stage")
        if self.sysroot is not None:
            # /boot read-only, as on Fedora CoreOS: the write methods must go through
            # their helper (private mount namespace, remount) under the unit's sandbox.
            options += [f"--bind-ro={self.sysroot}/boot:/boot", f"--bind={self.sysroot}/ostree:/ostree"]
        nspawn = ["systemd-nspawn", "-q", "-D", str(DEBIAN_TREE), "--boot", "--register=no",
                  "--keep-unit", "--volatile=overlay", "--console=passive", *options,
                  *self.init_args]
        Path("/run/systemd/nspawn").mkdir(parents=True, exist_ok=True)
        script = 'mount -t tmpfs tmpfs /run/systemd/nspawn && exec "$@"'
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *nspawn],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # sh execs nspawn: same pid. The container's init is nspawn's child.
        self.nspawn_pid = self.proc.pid
        deadline = time.monotonic() + 60
        while not self.leader:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError("no container init process after 60 s")
            self.leader = self._find_leader()
            time.sleep(0.05)
        # Wait for the boot to finish (running or degraded: both mean no job left).
        # systemctl fails to connect until init has created its private socket: retry.
        def booted() -> str:
            state = self.run(["systemctl", "is-system-running", "--wait"], timeout=90)
            return state.stdout.strip() if "Failed to connect" not in state.stderr else ""
        self.boot_state = self.wait_for("the container's boot", booted, timeout=90)

    def _find_leader(self) -> int:
        try:
            children = Path(f"/proc/{self.nspawn_pid}/task/{self.nspawn_pid}/children").read_text().split()
        except OSError:
            return 0
        for child in children:
            try:
                exe = os.readlink(f"/proc/{child}/exe")
            except OSError:
                continue
            if exe.endswith("/systemd"):
                return int(child)
        return 0

    def stop(self) -> None:
        """Halt the container (SIGTERM: nspawn asks init to power off), then clean up."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.nspawn_pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._remove_cgroups()

    @staticmethod
    def _own_cgroup_dirs() -> List[Path]:
        """The directories of this process's cgroups (v1 name=systemd and v2), where nspawn adds its own."""
        dirs = []
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hid, controllers, path = line.split(":", 2)
            if controllers == "name=systemd":
                dirs.append(Path("/sys/fs/cgroup/systemd") / path.lstrip("/"))
            elif hid == "0":
                for base in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
                    if (base / "cgroup.procs").exists():
                        dirs.append(base / path.lstrip("/"))
                        break
        return dirs

    def _remove_cgroups(self) -> None:
        for base in self._cgroup_dirs:
            for name in ("payload", "supervisor"):
                top = base / name
                if not top.is_dir():
                    continue
                # Depth first: a cgroup directory can only be removed once it has no children.
                for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass

    # -- inside --

    def run(self, argv: Sequence[str], timeout: float = 60, check: bool = False,
            env: Optional[Dict[str, str]] = None) -> Run:
        """Run ARGV in all of the container's namespaces, with a clean environment."""
        clean = {"PATH": GUEST_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        clean.update(env or {})
        result = subprocess.run(
            ["nsenter", "--target", str(self.leader), "--all", "--", "env", "-i",
             *[f"{k}={v}" for k, v in clean.items()], *argv],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} failed ({result.returncode}): {result.stderr}{result.stdout}")
        return Run(result.returncode, result.stdout, result.stderr)

    def show(self, unit: str, *props: str) -> Dict[str, str]:
        """systemctl show -p ... as a dict."""
        out = self.run(["systemctl", "show", unit, *[f"-p{p}" for p in props]], check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, what: str, predicate, timeout: float = 30.0, interval: float = 0.1):
        """Poll PREDICATE until it returns a true value (generous, for slow CI machines)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
