"""read_snapshot(paths) -> Snapshot: a sysroot, a mountinfo, a cmdline and a run dir made one snapshot.

Synchronous and cheap (the daemon runs it in a thread executor). Bad content is
never raised: it becomes a Problem (codes in docs/problems.md). Only a sysroot
that is unreadable or not an ostree sysroot raises SysrootError.

Choices worth knowing:
- Deployment.path is the deployment directory as the watched host sees it,
  /ostree/deploy/OS/deploy/CSUM.SERIAL, whatever directory the sysroot is read from.
- Deployment.version: the commit's `version` metadata when the repo holds the
  commit (what `ostree admin status` shows), else os-release OSTREE_VERSION,
  IMAGE_VERSION, VERSION. title: os-release PRETTY_NAME (else NAME).
- Problems are sorted by (code, subject, message), duplicates dropped.
- Deployments without an entry (and the staged one) have index -1 and come
  after the ordered ones; the staged one comes first of all.
- Booted detection (and BootedEntry, BootedRoot) only when run/ostree-booted
  exists, so an offline look at another sysroot never borrows the host's own
  boot state. BootedEntry is the entry of the booted deployment, never a match
  of the ostree= string (a bootversion swap makes that string stale).
- The default entry is what the boot loader will do (docs/default-entry.md,
  "Reading the default"): on grub2 the grub.cfg in use is evaluated with the
  grubenv (parse/grubcfg.py), entries are in blscfg's order.
- The repo's `sysroot.bootloader` only overrides file detection when it names
  a boot loader (grub2; "systemd"/"systemd-boot"); ostree's usual "none"/"auto"
  mean "ostree writes no boot loader config", not "no boot loader".
"""

from __future__ import annotations

import os
import stat
import time

from . import model
from ._record import frozen, replace
from .errors import OstreewatchError, SysrootError
from .layout import (
    ENTRIES_DIR,
    GRUB_DIRS,
    GRUB_NEXT_DEPLOYMENT,
    GRUB_SAVED_DEPLOYMENT,
    GRUB_SOURCED,
    LOADER_COMMENT,
    LOADER_CONFS,
    SYSROOT_LOCK,
    grubenv_location,
)
from .model import Paths as Paths
from .model import ProblemCode  # re-exported: callers built state.Paths before it moved
from .parse import bls
from .parse import cmdline as cmdline_parse
from .parse import grubenv as grubenv_parse
from .parse import mountinfo as mountinfo_parse
from .parse import origin as origin_parse
from .sysroot import ENTRY_MAX, SMALL_MAX, ReadRefused, Root, read_host_file

# Imported where a host needs them (grubcfg: a grub.cfg to evaluate; loaderconf: a loader.conf;
# gvariant: a staged deployment, run/ostree-booted or a commit's version; osrelease: a
# deployment's os-release): the first read runs before READY=1, and each import is boot time.
TYPE_CHECKING = False  # mypy takes any TYPE_CHECKING as true; `typing` is not imported
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from .parse import loaderconf

# The mount points whose lines parse_mountinfo keeps (its cheap prefilter).
WATCHED_MOUNT_POINTS: tuple[str, ...] = model.WATCHED_MOUNT_POINTS
MOUNTINFO_MAX = 32 * 1024 * 1024  # ~150,000 mount lines; a Kubernetes node stays far below
CMDLINE_MAX = 64 * 1024
COMMIT_MAX = 1024 * 1024  # a commit object is a few hundred bytes, plus its metadata
GRUB_CFG_MAX = 1024 * 1024  # a generated grub.cfg with many menu entries stays far below

# (sysroot, commit checksum) -> its version: parsed once per process, bounded.
_COMMIT_VERSIONS: dict[tuple[str, str], str] = {}
# (sysroot, entry file name, file signature) -> the parsed entry: a rescan re-parses only the entry
# files that changed (docs/design-notes.md).
_PARSED_ENTRIES: dict[tuple[str, str, tuple[int, int, int, int, int]], bls.BlsEntry] = {}
_PARSED_ENTRIES_MAX = 8192
ENTRY_SETTLE_NS = 2_000_000_000

# The names below are matched by hand: `re` (and the enum it imports) would cost every boot
# ~7 ms before READY=1. Each function says the expression it stands for.
_HEX = frozenset("0123456789abcdef")


def _digits(text: str) -> bool:
    """[0-9]+ (str.isdigit alone takes other scripts' digits too)."""
    return text.isascii() and text.isdigit()


def _checksum(text: str) -> bool:
    """[0-9a-f]{64}"""
    return len(text) == 64 and _HEX.issuperset(text)


def _deploy_name(name: str) -> tuple[str, str] | None:
    """(checksum, serial) of a fullmatch of ([0-9a-f]{64})\\.([0-9]+)."""
    checksum, dot, serial = name.partition(".")
    return (checksum, serial) if dot and _checksum(checksum) and _digits(serial) else None


def _ostree_arg(arg: str) -> tuple[str, str, str] | None:
    """(osname, bootcsum, serial) of a fullmatch of /?ostree/boot\\.[01]/([^/]+)/([0-9a-f]{64})/([0-9]+)/?"""
    text = arg[1:] if arg.startswith("/") else arg
    if not text.startswith(("ostree/boot.0/", "ostree/boot.1/")):
        return None
    text = text[len("ostree/boot.0/") :]
    parts = (text[:-1] if text.endswith("/") else text).split("/")
    if len(parts) != 3 or not parts[0] or not _checksum(parts[1]) or not _digits(parts[2]):
        return None
    return parts[0], parts[1], parts[2]


def _deploy_root(path: str) -> tuple[str, str, str] | None:
    """(osname, checksum, serial) of a search of (?:^|/)ostree/deploy/([^/]+)/deploy/([0-9a-f]{64})\\.([0-9]+)/?$"""
    if path.endswith("\n"):  # `$` matches before a final newline too
        return _deploy_root_at_end(path[:-1]) or _deploy_root_at_end(path)
    return _deploy_root_at_end(path)


def _deploy_root_at_end(path: str) -> tuple[str, str, str] | None:
    parts = (path[:-1] if path.endswith("/") else path).split("/")
    if len(parts) < 5 or parts[-5] != "ostree" or parts[-4] != "deploy" or parts[-2] != "deploy" or not parts[-3]:
        return None
    name = _deploy_name(parts[-1])
    return (parts[-3], name[0], name[1]) if name else None


def _loader_n(name: str) -> bool:
    """A fullmatch of loader\\.[0-9]+"""
    return name.startswith("loader.") and _digits(name[len("loader.") :])


class _Dep:
    """A deployment being assembled: its published record (replaced as the read learns more) and what only the
    reader needs."""

    __slots__ = ("rec", "rel", "unlocked")

    def __init__(self, rec: model.Deployment, rel: str) -> None:
        self.rec = rec  # index, booted, default and rollback are set when the records are made
        self.rel = rel  # resolved sysroot-relative directory
        self.unlocked = ""  # the origin's unlocked= value

    def update(self, **changes: Any) -> None:
        """Replace fields of the record."""
        self.rec = replace(self.rec, **changes)


class _Reader:
    """One read; collects problems as it goes."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.root = Root(paths.sysroot)
        self.problems: list[model.Problem] = []
        self.deploy_base = self._ostree_base()
        # ostree= value -> its resolution, for this one read (several entries may name one deployment).
        self._resolved_args: dict[str, tuple[tuple[str, str] | None, str]] = {}

    def problem(self, code: model.Code, message: str, subject: str = "") -> None:
        self.problems.append(model.Problem(code=code.code, message=message, subject=subject))

    def _ostree_base(self) -> str:
        """The resolved `ostree/deploy` directory; SysrootError when this is no ostree sysroot."""
        try:
            base = self.root.resolve("ostree/deploy")
        except ReadRefused as e:
            # e.path is inside the sysroot ("/ostree"): name it as the user gave the sysroot.
            missing = os.path.join(self.paths.sysroot, e.path.lstrip("/"))
            raise SysrootError(f"{self.paths.sysroot}: not an ostree sysroot ({missing}: {e.detail})") from None
        if not self.root.is_dir(base):
            raise SysrootError(f"{self.paths.sysroot}: not an ostree sysroot (ostree/deploy is not a directory)")
        try:
            os.listdir(self.root.real(base))
        except OSError as e:
            raise SysrootError(f"{self.paths.sysroot}: cannot read ostree/deploy: {e.strerror or e}") from None
        return base

    # --- deployments -----------------------------------------------------

    def deployments(self) -> dict[tuple[str, str], _Dep]:
        """Every CHECKSUM.SERIAL directory under ostree/deploy/*/deploy, keyed by (osname, CHECKSUM.SERIAL)."""
        found: dict[tuple[str, str], _Dep] = {}
        try:
            osnames = [n for n in self.root.listdir(self.deploy_base) if _utf8(n)]
        except ReadRefused:
            return found  # replaced since the check in __init__: nothing deployed to report
        for osname in osnames:
            try:
                names = self.root.listdir(f"{self.deploy_base}/{osname}/deploy")
            except ReadRefused:
                continue  # a stray file, or an OS dir with no deploy/ yet
            for name in names:
                m = _deploy_name(name)
                rel = f"{self.deploy_base}/{osname}/deploy/{name}"
                st = self.root.lstat(rel) if m else None
                if m is None or st is None or not stat.S_ISDIR(st.st_mode):  # ostree never links a deployment dir
                    continue
                checksum, serial = m[0], int(m[1])
                record = model.Deployment(
                    id=f"{osname}-{checksum}.{serial}",
                    osname=osname,
                    checksum=checksum,
                    serial=serial,
                    index=-1,
                    path=f"/ostree/deploy/{osname}/deploy/{name}",
                )
                dep = _Dep(rec=record, rel=rel)
                self._read_origin(dep, rel + ".origin")
                self._read_os_release(dep)
                dep.update(version=self._commit_version(checksum) or dep.rec.version)
                found[(osname, name)] = dep
        return found

    def _read_origin(self, dep: _Dep, rel: str) -> None:
        try:
            text = self.root.read(rel, SMALL_MAX).decode("utf-8", "strict")
            origin = origin_parse.parse_origin(text)
        except ReadRefused as e:
            if e.reason != ReadRefused.NOT_FOUND:
                self.problem(ProblemCode.ORIGIN_UNPARSABLE, f"cannot read the origin file: {e}", dep.rec.id)
            return
        except (UnicodeDecodeError, OstreewatchError) as e:
            self.problem(ProblemCode.ORIGIN_UNPARSABLE, f"cannot parse the origin file: {e}", dep.rec.id)
            return
        dep.update(origin=origin.refspec, pinned=origin.pinned)
        dep.unlocked = origin.unlocked

    def _read_os_release(self, dep: _Dep) -> None:
        from .parse import osrelease

        for candidate in ("usr/lib/os-release", "etc/os-release"):
            try:
                text = self.root.read_text(f"{dep.rel}/{candidate}", SMALL_MAX)
            except ReadRefused:
                continue
            try:
                values = osrelease.parse_os_release(text)
            except OstreewatchError:
                continue
            # The commit's version wins when the repo has the commit (_commit_version);
            # rpm-ostree and bootc also put it here.
            dep.update(
                version=values.get("OSTREE_VERSION") or values.get("IMAGE_VERSION") or values.get("VERSION") or "",
                title=values.get("PRETTY_NAME") or values.get("NAME") or "",
            )
            return

    def _commit_version(self, checksum: str) -> str:
        """The commit's `version` metadata (what `ostree admin status` shows); "" when unknown."""
        from .parse import gvariant

        key = (self.root.path, checksum)
        if key in _COMMIT_VERSIONS:  # objects are named by their content: never stale
            return _COMMIT_VERSIONS[key]
        try:
            data = self.root.read(f"ostree/repo/objects/{checksum[:2]}/{checksum[2:]}.commit", COMMIT_MAX)
            metadata = gvariant.parse_variant(data, "(a{sv}aya(say)sstayay)")[0]
        except (ReadRefused, OstreewatchError, IndexError, TypeError):
            return ""  # a repo-less or pruned sysroot: os-release says it
        version = metadata.get("version") if isinstance(metadata, dict) else None
        version = version if isinstance(version, str) and _utf8(version) else ""
        if len(_COMMIT_VERSIONS) >= 4096:
            _COMMIT_VERSIONS.clear()
        _COMMIT_VERSIONS[key] = version
        return version

    def resolve_ostree_arg(self, value: str) -> tuple[tuple[str, str] | None, str]:
        """((osname, CHECKSUM.SERIAL), "") for an ostree= that ends at a deployment; (None, why) otherwise."""
        known = self._resolved_args.get(value)
        if known is None:
            known = self._resolved_args[value] = self._resolve_ostree_arg(value)
        return known

    def _resolve_ostree_arg(self, value: str) -> tuple[tuple[str, str] | None, str]:
        try:
            rel = self.root.resolve(value)
        except ReadRefused as e:
            return None, str(e)
        prefix = self.deploy_base + "/"
        m = _deploy_root("/" + rel)
        if not rel.startswith(prefix) or not m or rel.count("/") != self.deploy_base.count("/") + 3:
            return None, f"resolves to /{rel}, which is not a deployment directory"
        if not self.root.is_dir(rel):
            return None, f"/{rel} is not a directory"
        return (m[0], f"{m[1]}.{m[2]}"), ""

    # --- entries -------------------------------------------------------

    def entries(self) -> list[bls.BlsEntry]:
        """The parsed entries of boot/loader/entries in systemd-boot order; problems for the rest."""
        self._check_loader_dirs()
        try:
            names = self.root.listdir(ENTRIES_DIR)
        except ReadRefused as e:
            if not self.loader_dangling:  # already reported as loader-link-dangling
                self.problem(
                    ProblemCode.ENTRIES_DIR_MISSING, f"cannot list boot/loader/entries: {e}", "/boot/loader/entries"
                )
            return []
        parsed = []
        for name in names:
            if not name.lower().endswith(".conf") or not bls.valid_entry_file_name(name):
                continue
            if not _utf8(name):
                self.problem(
                    ProblemCode.ENTRY_UNREADABLE,
                    "an entry file name is not valid UTF-8",
                    name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                )
                continue
            entry_id = bls.split_boot_counting(name)[0]
            rel = f"{ENTRIES_DIR}/{name}"
            signature = self._file_signature(rel)
            entry = _PARSED_ENTRIES.get((self.root.path, name, signature)) if signature else None
            if entry is None:
                try:
                    data = self.root.read(rel, ENTRY_MAX)
                except ReadRefused as e:
                    self.problem(ProblemCode.ENTRY_UNREADABLE, f"entry {name}: {e}", entry_id)
                    continue
                try:
                    entry = bls.parse_entry(name, data)
                except OstreewatchError as e:
                    self.problem(ProblemCode.ENTRY_UNPARSABLE, str(e), entry_id)
                    continue
                if signature:
                    _remember_entry((self.root.path, name, signature), entry)
            if not entry.linux and not entry.efi:
                self.problem(ProblemCode.ENTRY_NO_KERNEL, f"entry {name} has neither 'linux' nor 'efi'", entry.id)
            parsed.append(entry)
        return bls.sort_entries(parsed)

    def _file_signature(self, rel: str) -> tuple[int, int, int, int, int] | None:
        """(dev, inode, size, mtime, ctime) of a regular file whose last change is old enough to trust them.

        A file changed within ENTRY_SETTLE_NS of now gets None (always re-read): the
        kernel's timestamps are coarse (a clock tick), so two writes of the same size in
        one tick would look alike ("racy git"). Any later change gets a later ctime.
        """
        try:
            st = self.root.lstat(self.root.resolve(rel))
        except ReadRefused:
            return None
        if st is None or not stat.S_ISREG(st.st_mode) or time.time_ns() - st.st_ctime_ns < ENTRY_SETTLE_NS:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _check_loader_dirs(self) -> None:
        """loader-link-dangling, stale-loader-dir and stale-boot-dir."""
        target = self.root.readlink("boot/loader")
        self.loader_dangling = target is not None and not self.root.is_dir("boot/loader")
        if self.loader_dangling:
            self.problem(
                ProblemCode.LOADER_LINK_DANGLING,
                f"boot/loader points to {target}, which is not a directory",
                "/boot/loader",
            )
        try:
            names = self.root.listdir("boot")
        except ReadRefused:
            return
        current = os.path.basename(target.rstrip("/")) if target is not None else None
        for name in names:
            if _loader_n(name) and current is not None and name != current:
                self.problem(
                    ProblemCode.STALE_LOADER_DIR,
                    f"boot/{name} is left beside boot/loader -> {target} (an interrupted deployment?)",
                    f"/boot/{name}",
                )
        if current in ("loader.0", "loader.1"):
            self._check_boot_dirs(int(current[-1]))

    def _check_boot_dirs(self, bootversion: int) -> None:
        """stale-boot-dir: what ostree's cleanup_other_bootversions removes, when it is there.

        ostree/boot.B (B the bootversion boot/loader names) links to boot.B.S, the
        subbootversion in use; the other bootversion's boot.X, boot.X.0, boot.X.1 and the other
        subbootversion's boot.B.T are what a write leaves until ostree's cleanup, which every
        ostree command runs before it releases the sysroot lock (the daemon does not read
        while that lock is held). A boot.B link that is not to boot.B.0 or boot.B.1: its
        subbootversion is not guessed at, the other bootversion's names are still judged.
        """
        link = self.root.readlink(f"ostree/boot.{bootversion}")
        other = 1 - bootversion
        names = [f"boot.{other}", f"boot.{other}.0", f"boot.{other}.1"]
        in_use = f"boot/loader -> loader.{bootversion}"
        if link is None:
            names.append(f"boot.{bootversion}.1")  # ostree reads a missing boot.B link as subbootversion 0
        elif link.rstrip("/") in (f"boot.{bootversion}.0", f"boot.{bootversion}.1"):
            sub = int(link.rstrip("/")[-1])
            names.append(f"boot.{bootversion}.{1 - sub}")
            in_use = f"ostree/boot.{bootversion} -> boot.{bootversion}.{sub}"
        for name in names:
            if self.root.exists(f"ostree/{name}"):
                self.problem(
                    ProblemCode.STALE_BOOT_DIR,
                    f"ostree/{name} is left unused beside {in_use} (an interrupted write? harmless to booting; "
                    "`ostree admin cleanup` removes it)",
                    f"/ostree/{name}",
                )

    # --- boot loader -----------------------------------------------------

    def bootloader(self) -> str:
        configured = self._repo_bootloader()
        if configured == "grub2":
            return "grub2"
        if configured in ("systemd", "systemd-boot"):
            return "systemd-boot"
        if any(self.root.exists(f"{d}/{f}") for d in GRUB_DIRS for f in ("grubenv", "grub.cfg")):
            return "grub2"
        if any(self.root.exists(p) for p in LOADER_CONFS):
            return "systemd-boot"
        for d in GRUB_DIRS:
            # A GRUB directory that cannot be searched (a sandbox's InaccessiblePaths=, odd modes)
            # hides grub.cfg: "none" would be a guess, so say why the boot loader is unknown.
            if self.root.is_dir(d):
                try:
                    self.root.listdir(d)
                except ReadRefused as e:
                    self.problem(ProblemCode.GRUB_CFG_UNSUPPORTED, f"cannot look into {e.path}: {e.detail}", e.path)
        return "none"

    def _repo_bootloader(self) -> str:
        try:
            text = self.root.read_text("ostree/repo/config", SMALL_MAX)
            groups = origin_parse.parse_keyfile(text)
        except (ReadRefused, OstreewatchError):
            return ""
        return groups.get("sysroot", {}).get("bootloader", "").strip().lower()

    def grubenv(self) -> tuple[dict[str, str], str]:
        """(variables, path) of the grubenv (layout.grubenv_location); ({}, "") when none or unparsable."""
        rel = grubenv_location(self.root)
        if rel is None:
            return {}, ""
        try:
            return grubenv_parse.parse_grubenv(self.root.read(rel, SMALL_MAX)), "/" + rel
        except (ReadRefused, OstreewatchError) as e:
            self.problem(ProblemCode.GRUBENV_UNPARSABLE, f"cannot read /{rel}: {e}", "/" + rel)
            return {}, "/" + rel

    def grub_config(self) -> tuple[str, dict[str, str], str] | None:
        """(grub.cfg text, {sourced name: text, "grubenv": ""}, path) of the first grub.cfg; None when none.

        An unreadable grub.cfg is a problem and None.
        """
        try:
            return read_grub_config(self.root)
        except ReadRefused as e:
            self.problem(ProblemCode.GRUB_CFG_UNSUPPORTED, f"cannot read {e}", e.path)
            return None

    def loader_conf(self) -> tuple[loaderconf.LoaderConf | None, str]:
        from .parse import loaderconf

        for rel in LOADER_CONFS:
            if not self.root.exists(rel):
                continue
            try:
                text = self.root.read(rel, SMALL_MAX).decode("utf-8", "strict")
                return loaderconf.parse_loader_conf(text), "/" + rel
            except (ReadRefused, UnicodeDecodeError, OstreewatchError) as e:
                self.problem(ProblemCode.LOADER_CONF_UNPARSABLE, f"cannot read /{rel}: {e}", "/" + rel)
                return None, "/" + rel
        return None, ""

    # --- run dir, cmdline, mounts -----------------------------------------

    def run_file(self, rel: str, cap: int = SMALL_MAX) -> bytes | None:
        """A file under the run dir; None when absent or unreadable (a problem when unreadable)."""
        try:
            run = Root(self.paths.run)
        except SysrootError:
            return None
        if not run.exists(rel):
            return None
        try:
            return run.read(rel, cap)
        except ReadRefused as e:
            self.problem(
                ProblemCode.RUN_FILE_UNREADABLE,
                f"cannot read {os.path.join(self.paths.run, rel)}: {e}",
                os.path.join(self.paths.run, rel),
            )
            return b""

    def cmdline_ostree(self) -> str:
        try:
            text = read_host_file(self.paths.cmdline, CMDLINE_MAX).decode("utf-8", "replace")
            return cmdline_parse.get_arg(text, "ostree") or ""
        except (ReadRefused, OstreewatchError):
            return ""

    def mounts(self) -> tuple[tuple[model.Mount, ...], bool]:
        """(mounts of the watched mount points, whether the mountinfo could be read)."""
        try:
            data = read_host_file(self.paths.mountinfo, MOUNTINFO_MAX)
        except ReadRefused as e:
            self.problem(ProblemCode.MOUNTINFO_UNPARSABLE, f"cannot read the mount table: {e}", self.paths.mountinfo)
            return (), False
        mounts, errors = _watched_mounts(data)
        if errors:
            self.problem(
                ProblemCode.MOUNTINFO_UNPARSABLE,
                f"{len(errors)} line(s) of {self.paths.mountinfo} cannot be parsed; first: {errors[0]}",
                self.paths.mountinfo,
            )
        return mounts, True


def _watched_mounts(data: bytes) -> tuple[tuple[model.Mount, ...], tuple[OstreewatchError, ...]]:
    """The Mounts records of the watched mount points, and the lines that could not be parsed."""
    infos, errors = mountinfo_parse.parse_mountinfo(data, mount_points=WATCHED_MOUNT_POINTS)
    top: dict[str, mountinfo_parse.MountInfo] = {}
    for parsed in infos:
        top[parsed.mount_point] = parsed  # a later line is mounted over an earlier one
    out = []
    for point in WATCHED_MOUNT_POINTS:
        info = top.get(point)
        if info is None:
            continue
        out.append(
            model.Mount(
                mount_point=info.mount_point,
                mount_id=info.mount_id,
                parent_id=info.parent_id,
                device=f"{info.major}:{info.minor}",
                root=info.root,
                source=info.source,
                fstype=info.fstype,
                options=info.options,
                super_options=info.super_options,
                read_only="ro" in info.options.split(","),
                propagation=" ".join(info.optional_fields),
            )
        )
    return tuple(out), errors


def mount_fingerprint(paths: Paths) -> tuple[tuple[model.Mount, ...], int] | None:
    """What of the mount table the snapshot depends on; None when it cannot be read.

    Equal fingerprints mean a rescan would publish nothing new about mounts, so the
    daemon skips the full rescan when only the mount table woke it (a mount storm).
    """
    try:
        data = read_host_file(paths.mountinfo, MOUNTINFO_MAX)
    except ReadRefused:
        return None
    mounts, errors = _watched_mounts(data)
    return mounts, len(errors)


def _remember_entry(key: tuple[str, str, tuple[int, int, int, int, int]], entry: bls.BlsEntry) -> None:
    if len(_PARSED_ENTRIES) >= _PARSED_ENTRIES_MAX:  # entries renamed away leave stale keys: start over
        _PARSED_ENTRIES.clear()
    _PARSED_ENTRIES[key] = entry


def read_grub_config(root: Root) -> tuple[str, dict[str, str], str] | None:
    """(grub.cfg text, {sourced name: text, "grubenv": ""}, path) of the first grub.cfg; None when none.

    What GRUB would read: the reader (DefaultEntry) and the writer (does grub read the
    variable it would write?) both evaluate this with parse.grubcfg. ReadRefused when
    grub.cfg is there but cannot be read.
    """
    for d in GRUB_DIRS:
        rel = f"{d}/grub.cfg"
        if not root.exists(rel):
            continue
        try:
            text = root.read(rel, GRUB_CFG_MAX).decode("utf-8", "replace")
        except ReadRefused as e:
            raise ReadRefused(e.reason, "/" + rel, str(e)) from None
        files: dict[str, str] = {}
        for name in GRUB_SOURCED:
            try:
                files[name] = root.read(f"{d}/{name}", GRUB_CFG_MAX).decode("utf-8", "replace")
            except ReadRefused:
                continue  # absent (the usual case) or unreadable: grub's `-f` test fails too
        if root.exists(f"{d}/grubenv"):
            files["grubenv"] = ""
        return text, files, "/" + rel
    return None


def _utf8(name: str) -> bool:
    """False for a file name with bytes that are not UTF-8 (they cannot cross D-Bus)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _deployment_comment(conf: loaderconf.LoaderConf) -> str | None:
    """The deployment id of a '#ostreewatch-deployment ID' line right before the last `default` line."""
    lines = [line.rstrip("\r\n") for line in conf.lines]
    for i in range(len(lines) - 1, -1, -1):
        words = lines[i].split()
        if words and words[0] == "default":
            prev = lines[i - 1].split() if i > 0 else []
            if len(prev) == 2 and prev[0] == LOADER_COMMENT:
                return prev[1]
            return None
    return None


def read_snapshot(paths: Paths) -> model.Snapshot:
    """The whole boot state now; raises SysrootError only for an unreadable or non-ostree sysroot."""
    r = _Reader(paths)
    deps = r.deployments()
    bootloader, entries = _entries(r)
    links = _link_entries(r, entries, deps)
    by_id = {d.rec.id: d for d in deps.values()}
    staged_id = _staged(r, deps, by_id)
    mounts, mounts_ok = r.mounts()
    booted = _booted(r, deps, mounts)
    unordered = _unordered(r, deps)
    default = _default_and_next(r, bootloader, entries, links.entry_dep)
    default_id = links.entry_dep.get(default.entry, "")
    rollback_id = _rollback(by_id, links.ordered, booted.deployment, default_id)
    # The booted deployment's entry: whatever boot.N the command line names, ostree
    # may have swapped the bootversion since (every deploy, rollback or cleanup does).
    booted_entry = by_id[booted.deployment].rec.entry if booted.deployment in by_id else ""
    _host_problems(r, booted, by_id, mounts, mounts_ok)
    return model.Snapshot(
        Bootloader=bootloader,
        OstreeBooted=booted.ostree_booted,
        BootedDeployment=booted.deployment,
        DefaultDeployment=default_id,
        RollbackDeployment=rollback_id,
        StagedDeployment=staged_id if staged_id in by_id else "",
        DefaultEntry=default.entry,
        NextEntry=default.next_entry,
        BootedEntry=booted_entry,
        DefaultEntrySource=default.source,
        BootedRoot=booted.root,
        Deployments=_deployment_records(links.ordered, unordered, booted.deployment, default_id, rollback_id),
        BootEntries=_entry_records(entries, links, default.entry, booted_entry),
        Mounts=mounts,
        Problems=_sorted_problems(r.problems),
    )


def _sorted_problems(problems: Iterable[model.Problem]) -> tuple[model.Problem, ...]:
    return tuple(sorted(set(problems), key=lambda p: (p.code, p.subject, p.message)))


def with_lock_held(snapshot: model.Snapshot, waited_max: float) -> model.Snapshot:
    """SNAPSHOT plus problem sysroot-lock-held: read while ostree's lock had been held over WAITED_MAX seconds.

    The message names the limit, not the time waited, so that the snapshots published while
    the lock stays held compare equal (no new generation every recheck).
    """
    problem = model.Problem(
        code=ProblemCode.SYSROOT_LOCK_HELD.code,
        message=f"ostree's sysroot lock ({SYSROOT_LOCK}) has been held for more than {waited_max:g} s: "
        "what is published may be half-written by the operation holding it",
        subject="/" + SYSROOT_LOCK,
    )
    return replace(snapshot, Problems=_sorted_problems((*snapshot.Problems, problem)))


class _Links:
    """Entries matched to deployments through their ostree= argument."""

    __slots__ = ("entry_dep", "entry_ostree", "ordered")

    def __init__(self) -> None:
        self.entry_dep: dict[str, str] = {}  # entry id -> deployment id
        self.entry_ostree: dict[str, str] = {}  # entry id -> its ostree= value
        self.ordered: list[_Dep] = []  # deployments with an entry, in boot order


@frozen
class _BootedHost:
    """What run/ostree-booted, the cmdline and the mount table say about the booted deployment."""

    ostree_booted: bool
    deployment: str  # its id, "" when unknown or not booted
    cmd_ostree: str  # the cmdline's ostree=, "" when not booted
    root: tuple[tuple[str, object], ...]


@frozen
class _Default:
    """DefaultEntry, NextEntry and DefaultEntrySource."""

    entry: str = ""
    next_entry: str = ""
    source: str = "none"


def _entries(r: _Reader) -> tuple[str, list[bls.BlsEntry]]:
    """(boot loader, its entries in the order it shows them)."""
    from .parse import grubcfg

    entries = r.entries()
    bootloader = r.bootloader()
    if bootloader == "grub2":
        if grub_flavour(r) == grubcfg.FLAVOUR_UPSTREAM:
            by_file = {e.file: e for e in entries}
            entries = [by_file[f] for f in grubcfg.blsuki_order(list(by_file))]
        else:
            entries = bls.sort_entries_grub(entries)
    return bootloader, entries


def grub_flavour(r: _Reader) -> str:
    """Which GRUB reads the BLS entries: upstream 2.14 (blsuki.mod) or Fedora's rhboot/grub2 (blscfg.mod).

    The module directory beside grub.cfg (PLATFORM/blsuki.mod or PLATFORM/blscfg.mod)
    decides; without modules, the layout: Fedora's GRUB uses boot/grub2/, upstream boot/grub/.
    """
    from .parse import grubcfg

    for d in GRUB_DIRS:
        if not (r.root.exists(f"{d}/grub.cfg") or r.root.exists(f"{d}/grubenv")):
            continue
        try:
            platforms = [p for p in r.root.listdir(d) if "-" in p]
        except ReadRefused:
            platforms = []
        for p in platforms:
            if r.root.exists(f"{d}/{p}/blsuki.mod"):
                return grubcfg.FLAVOUR_UPSTREAM
            if r.root.exists(f"{d}/{p}/blscfg.mod"):
                return grubcfg.FLAVOUR_FEDORA
        return grubcfg.FLAVOUR_FEDORA if d.endswith("grub2") else grubcfg.FLAVOUR_UPSTREAM
    return grubcfg.FLAVOUR_FEDORA


def _link_entries(r: _Reader, entries: list[bls.BlsEntry], deps: dict[tuple[str, str], _Dep]) -> _Links:
    """Entries -> deployments, through the boot links; sets each deployment's entry and boot checksum."""
    links = _Links()
    for e in entries:
        try:
            arg = cmdline_parse.get_arg(e.options, "ostree") if e.options else None
        except OstreewatchError as err:
            r.problem(ProblemCode.OSTREE_ARG_UNRESOLVED, f"entry {e.file}: cannot read its options: {err}", e.id)
            continue
        if arg is None:
            continue
        links.entry_ostree[e.id] = arg
        key, why = r.resolve_ostree_arg(arg)
        dep = deps.get(key) if key else None
        if dep is None:
            r.problem(
                ProblemCode.OSTREE_ARG_UNRESOLVED, f"entry {e.file}: ostree={arg}: {why or 'no such deployment'}", e.id
            )
            continue
        links.entry_dep[e.id] = dep.rec.id
        if dep.rec.entry:
            continue  # a second entry for one deployment: the first in order is its entry
        dep.update(entry=e.id)
        m = _ostree_arg(arg)
        if m:
            dep.update(bootcsum=m[1], bootserial=int(m[2]))
        links.ordered.append(dep)
    return links


def _staged(r: _Reader, deps: dict[tuple[str, str], _Dep], by_id: dict[str, _Dep]) -> str:
    """The id run/ostree/staged-deployment names ("" when none); marks that deployment staged if it has no entry."""
    from .parse import gvariant

    staged_id = ""
    data = r.run_file("ostree/staged-deployment")
    if data:
        try:
            s = gvariant.parse_staged_deployment(data)
            serial = int(s.get("serial", s.get("deployserial", -1)))
            if serial < 0:  # a target without a serial: the one deployment of that checksum
                serial = next(
                    (
                        d.rec.serial
                        for d in deps.values()
                        if d.rec.osname == s["osname"] and d.rec.checksum == s["checksum"]
                    ),
                    0,
                )
            staged_id = f"{s['osname']}-{s['checksum']}.{serial}"
        except (OstreewatchError, KeyError, TypeError, ValueError) as e:
            r.problem(
                ProblemCode.STAGED_UNPARSABLE,
                f"cannot parse run/ostree/staged-deployment: {e}",
                os.path.join(r.paths.run, "ostree/staged-deployment"),
            )
    if staged_id in by_id and not by_id[staged_id].rec.entry:
        by_id[staged_id].update(staged=True)
    return staged_id


def _booted(r: _Reader, deps: dict[tuple[str, str], _Dep], mounts: tuple[model.Mount, ...]) -> _BootedHost:
    """The booted deployment, looked for only when run/ostree-booted exists."""
    booted_raw = r.run_file("ostree-booted")
    if booted_raw is None:
        return _BootedHost(ostree_booted=False, deployment="", cmd_ostree="", root=())
    cmd_ostree = r.cmdline_ostree()
    meta = _booted_metadata(r, booted_raw, os.path.join(r.paths.run, "ostree-booted"))
    return _BootedHost(
        ostree_booted=True,
        deployment=_find_booted(r, deps, meta, mounts, cmd_ostree),
        cmd_ostree=cmd_ostree,
        root=model.booted_root_items(_booted_root(meta)),
    )


def _unordered(r: _Reader, deps: dict[tuple[str, str], _Dep]) -> list[_Dep]:
    """Deployments without an entry, the staged one first; deployment-no-entry for the others."""
    rest = sorted(
        (d for d in deps.values() if not d.rec.entry),
        key=lambda d: (not d.rec.staged, d.rec.osname, d.rec.checksum, d.rec.serial),
    )
    for d in rest:
        if not d.rec.staged:
            r.problem(ProblemCode.DEPLOYMENT_NO_ENTRY, f"deployment {d.rec.id} has no boot entry", d.rec.id)
    return rest


def _default_and_next(r: _Reader, bootloader: str, entries: list[bls.BlsEntry], entry_dep: dict[str, str]) -> _Default:
    """What the boot loader boots by default and next; default-entry-moved and boot-fallback problems."""
    default = _Default()
    recorded: dict[str, str] = {}  # entry id -> the deployment a write recorded beside it
    if bootloader == "grub2":
        default = _grub_default(r, entries, recorded)
    elif bootloader == "systemd-boot":
        default = _loader_conf_default(r, entries, recorded)
    if not default.entry and entries and bootloader != "grub2":
        default = _Default(entries[0].id, default.next_entry, "first-entry")
    for entry_id, dep_id in recorded.items():
        if entry_dep.get(entry_id, "") != dep_id:
            r.problem(
                ProblemCode.DEFAULT_ENTRY_MOVED,
                f"entry {entry_id} was chosen for deployment {dep_id}, but now boots "
                f"{entry_dep.get(entry_id) or 'no deployment'}",
                entry_id,
            )
    _boot_counting_fallback(r, entries, default.entry)
    return default


def _loader_conf_default(r: _Reader, entries: list[bls.BlsEntry], recorded: dict[str, str]) -> _Default:
    """systemd-boot: loader.conf's `default` matched against the entry files."""
    from .parse import loaderconf

    conf, conf_path = r.loader_conf()
    if conf is None or not conf.default:
        return _Default()
    try:
        match = loaderconf.match_default(conf.default, [e.file for e in entries])
    except OstreewatchError:
        match = None
    if match is None:
        r.problem(
            ProblemCode.SAVED_ENTRY_MISSING, f"default {conf.default} in {conf_path} matches no entry", conf.default
        )
        return _Default()
    entry = bls.split_boot_counting(match)[0]
    comment = _deployment_comment(conf)
    if comment:
        recorded[entry] = comment
    return _Default(entry, "", "loader.conf")


def _rollback(by_id: dict[str, _Dep], ordered: list[_Dep], booted_id: str, default_id: str) -> str:
    """The next deployment of the same OS after the booted one (or the default one) in boot order."""
    base = by_id.get(booted_id) or by_id.get(default_id)
    if base is not None and base in ordered:
        for d in ordered[ordered.index(base) + 1 :]:
            if d.rec.osname == base.rec.osname:
                return d.rec.id
    return ""


def _host_problems(
    r: _Reader, booted: _BootedHost, by_id: dict[str, _Dep], mounts: tuple[model.Mount, ...], mounts_ok: bool
) -> None:
    """Problems about the booted host: booted-unknown, usr-writable, boot-not-mounted.

    A booted deployment that is not the default is a pending update or a rollback:
    visible from the properties, not a problem.
    """
    booted_path = os.path.join(r.paths.run, "ostree-booted")
    if booted.ostree_booted and not booted.deployment:
        r.problem(
            ProblemCode.BOOTED_UNKNOWN,
            f"{booted_path} exists but no deployment matches the booted root "
            f"(inode, / mount or ostree={booted.cmd_ostree or 'none'})",
            booted_path,
        )
    if booted.ostree_booted and mounts_ok:
        points = {m.mount_point: m for m in mounts}
        usr = points.get("/usr")
        dep = by_id.get(booted.deployment)
        if usr is not None and not usr.read_only and dep is not None and not dep.unlocked:
            r.problem(
                ProblemCode.USR_WRITABLE, f"/usr is mounted read-write, but {booted.deployment} is not unlocked", "/usr"
            )
        if "/boot" not in points:
            r.problem(ProblemCode.BOOT_NOT_MOUNTED, "/boot is not a mount point on this booted host", "/boot")


def _deployment_records(
    ordered: list[_Dep], unordered: list[_Dep], booted_id: str, default_id: str, rollback_id: str
) -> tuple[model.Deployment, ...]:
    """The Deployments property: staged first, then boot order, then the rest (index -1)."""

    def record(d: _Dep, index: int) -> model.Deployment:
        return replace(
            d.rec,
            index=index,
            booted=d.rec.id == booted_id,
            default=d.rec.id == default_id,
            rollback=d.rec.id == rollback_id,
        )

    return tuple(
        [record(d, -1) for d in unordered if d.rec.staged]
        + [record(d, i) for i, d in enumerate(ordered)]
        + [record(d, -1) for d in unordered if not d.rec.staged]
    )


def _entry_records(
    entries: list[bls.BlsEntry], links: _Links, default_entry: str, booted_entry: str
) -> tuple[model.BootEntry, ...]:
    """The BootEntries property, in the boot loader's order."""
    return tuple(
        model.BootEntry(
            id=e.id,
            file=e.file,
            title=e.title,
            version=e.version,
            sort_key=e.sort_key,
            machine_id=e.machine_id,
            linux=e.linux or e.efi,
            initrd=tuple(e.initrd),
            options=e.options,
            devicetree=e.devicetree,
            architecture=e.architecture,
            ostree=links.entry_ostree.get(e.id, ""),
            deployment=links.entry_dep.get(e.id, ""),
            default=e.id == default_entry,
            booted=e.id == booted_entry,
            tries_left=-1 if e.tries_left is None else e.tries_left,
        )
        for e in entries
    )


def _booted_metadata(r: _Reader, raw: bytes, path: str) -> dict[str, object]:
    """run/ostree-booted's a{sv}; {} for the empty file of ostree < 2024.2, and a problem when unparsable."""
    from .parse import gvariant

    try:
        return gvariant.parse_ostree_booted(raw)
    except OstreewatchError as e:
        r.problem(ProblemCode.RUN_FILE_UNREADABLE, f"cannot parse {path}: {e}", path)
        return {}


def _booted_root(meta: dict[str, object]) -> dict[str, object]:
    """BootedRoot: ostree's keys renamed (model.BOOTED_ROOT_OSTREE_KEYS); values of the wrong type dropped."""
    out: dict[str, object] = {}
    for ostree_key, key in model.BOOTED_ROOT_OSTREE_KEYS.items():
        value = meta.get(ostree_key)
        want = bool if model.BOOTED_ROOT_KEYS[key] == "b" else str
        if isinstance(value, want) and (want is str or isinstance(value, bool)):
            out[key] = value
    inode = meta.get("backing-root-device-inode")
    if isinstance(inode, tuple) and len(inode) == 2:  # parse_ostree_booted checked it is (tt)
        out["backing_device"], out["backing_inode"] = inode
    return out


def _find_booted(
    r: _Reader,
    deps: dict[tuple[str, str], _Dep],
    meta: dict[str, object],
    mounts: tuple[model.Mount, ...],
    cmd_ostree: str,
) -> str:
    """The booted deployment: run/ostree-booted's (dev, inode), else the root of the `/` mount, else ostree=."""
    inode = meta.get("backing-root-device-inode")
    if isinstance(inode, tuple) and inode:  # a (tt) pair: parse/gvariant.py checks it
        for d in deps.values():
            st = r.root.lstat(d.rel)
            if st is not None and (st.st_dev, st.st_ino) == tuple(inode):
                return d.rec.id
    for m in mounts:
        if m.mount_point == "/":
            hit = _deploy_root(m.root)
            if hit:
                dep = deps.get((hit[0], f"{hit[1]}.{hit[2]}"))
                if dep is not None:
                    return dep.rec.id
    if cmd_ostree:
        key, _ = r.resolve_ostree_arg(cmd_ostree)
        dep = deps.get(key) if key else None
        if dep is not None:
            return dep.rec.id
    return ""


def _grub_menu_match(value: str, entries: list[bls.BlsEntry], shift: int) -> bls.BlsEntry | None:
    """The entry GRUB boots for `default=VALUE`; None when VALUE names no entry (GRUB boots entry 0).

    grubcfg.menu_index is GRUB's own lookup (menu.c get_entry_number): a value that
    starts with a number is an index (`1abc` is 1), else the first entry whose title or
    id matches; the id is the file name less ".conf", boot-counting suffix included
    (GRUB 2.14 blsuki), so the contract id of a counted entry names none.
    SHIFT plain menuentries come before blscfg's (their ids and titles are not known).
    """
    from .parse import grubcfg

    menu = [("\x00", "\x00")] * shift + [
        (e.file[:-5] if e.file.endswith(".conf") else e.file, e.title) for e in entries
    ]
    i = grubcfg.menu_lookup(value, menu)
    if i is None or i < shift:
        return None
    return entries[i - shift]


def _grub_default(r: _Reader, entries: list[bls.BlsEntry], recorded: dict[str, str]) -> _Default:
    """(DefaultEntry, NextEntry, DefaultEntrySource) on a grub2 host: grub.cfg run with the grubenv."""
    from .parse import grubcfg

    env, env_path = r.grubenv()
    found = r.grub_config()
    if found is None:
        if not any(p.code == ProblemCode.GRUB_CFG_UNSUPPORTED.code for p in r.problems):
            r.problem(
                ProblemCode.GRUB_CFG_UNSUPPORTED,
                "no boot/grub2/grub.cfg or boot/grub/grub.cfg: what GRUB boots cannot be told",
                "/boot/grub2/grub.cfg",
            )
        return _Default()
    text, files, cfg_path = found
    res = grubcfg.evaluate(text, files, env)
    for var, reads in (("saved_entry", res.reads_saved_entry), ("next_entry", res.reads_next_entry)):
        if env.get(var) and not (reads and res.loads_env):
            r.problem(
                ProblemCode.SAVED_ENTRY_IGNORED,
                f"{var}={env[var]} is set in {env_path or 'the grubenv'}, but {cfg_path} never "
                f"{'loads the grubenv' if reads else 'reads ' + var}: GRUB does not use it",
                var,
            )
    if res.default is None:
        r.problem(
            ProblemCode.GRUB_CFG_UNSUPPORTED,
            f"cannot tell what {cfg_path} makes the default ({', '.join(res.unknown_classes) or 'unknown'}): "
            f"{'; '.join(res.unknown) or 'unknown'}",
            cfg_path,
        )
        return _Default()
    if not entries:
        return _Default()
    first = entries[0]  # GRUB boots entry 0 when `default` is unset or matches nothing
    if res.greenboot_fired and entries:
        r.problem(
            ProblemCode.BOOT_FALLBACK,
            f"greenboot's boot counter ran out (boot_counter={env.get('boot_counter', '')}, boot_success="
            f"{env.get('boot_success', '')} in {env_path}): {first.id} was tried and not kept; GRUB boots "
            f"menu entry {res.default or '0'} instead",
            first.id,
        )
    if res.default_from == grubcfg.FROM_UNSET or res.default == "":
        return _Default(first.id, "", "first-entry")
    match = _grub_menu_match(res.default, entries, res.menuentries_before_blscfg)
    sources = {
        grubcfg.FROM_SAVED: "saved_entry",
        grubcfg.FROM_NEXT: "next_entry",
        grubcfg.FROM_ENV: "grubenv-default",
        grubcfg.FROM_GREENBOOT: "greenboot-fallback",
        grubcfg.FROM_LITERAL: "grub.cfg",
    }
    source = sources.get(res.default_from, "grub.cfg")
    if match is None:
        r.problem(
            ProblemCode.SAVED_ENTRY_MISSING,
            f"default={res.default} (from {source} in {cfg_path}) names no entry: GRUB boots the first",
            res.default,
        )
        return _Default(first.id, "", "first-entry")
    variable = {grubcfg.FROM_SAVED: GRUB_SAVED_DEPLOYMENT, grubcfg.FROM_NEXT: GRUB_NEXT_DEPLOYMENT}
    if res.default_from in variable and env.get(variable[res.default_from]):
        recorded[match.id] = env[variable[res.default_from]]
    return _Default(match.id, match.id if res.boot_once else "", source)


def _by_version(a: bls.BlsEntry, b: bls.BlsEntry) -> int:
    return bls.strverscmp_improved(a.version, b.version)


def _boot_counting_fallback(r: _Reader, entries: list[bls.BlsEntry], default_entry: str) -> None:
    """boot-fallback for a boot-counting entry with no tries left that is the default or the newest.

    ostree (2025.3+, sysroot.boot-counting-tries) writes new entries as
    ostree-N+TRIES.conf; systemd-bless-boot renames a good one ostree-N+LEFT-DONE or
    drops the suffix; +0 means every try failed (systemd src/boot/bless-boot.c).
    """
    if not entries:
        return
    newest = max(entries, key=bls.cmp_to_key(_by_version))
    for e in entries:
        if e.tries_left == 0 and (e.id == default_entry or e is newest):
            r.problem(
                ProblemCode.BOOT_FALLBACK,
                f"entry {e.file} has no boot tries left: it was tried {e.tries_done or 0} time(s) and not kept",
                e.id,
            )
