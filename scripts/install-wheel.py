#!/usr/bin/env python3
"""Install the project's wheel as a distribution does: unpacked, byte-compiled, with its dist-info.

Run by `make install` (see the Makefile for the variables); by hand:

    scripts/install-wheel.py --destdir D --sitedir /usr/lib/python3/dist-packages \\
        --script ostreewatch=/usr/bin --script ostreewatchd=/usr/libexec build/wheel/*.whl

What it does, in order:
1. removes a previous install of the same project from D+SITEDIR (the files its RECORD names),
   so that a module deleted since is not left behind;
2. unpacks the wheel's files into D+SITEDIR (0644, directories 0755);
3. writes each console script named by --script into D+DIR (0755) with the shebang --shebang;
4. byte-compiles the package with the python that will run it (--compile-python, e.g.
   `chroot TREE /usr/bin/python3` for another tree) in checked-hash mode: the .pyc holds
   the source's hash, not its mtime, so it stays valid whatever mtimes the files get on a
   read-only /usr (an OSTree commit sets every mtime to 0);
5. writes INSTALLER and a RECORD listing every file, the .pyc files and scripts included.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import csv
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import zipfile

INSTALLER = "make-install\n"


def record_hash(data: bytes) -> str:
    """A RECORD hash field: sha256=urlsafe-base64 without padding."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def inside(root: str, path: str) -> str:
    """PATH (relative to the site dir or absolute under DESTDIR) checked to stay under ROOT."""
    real = os.path.normpath(path)
    if os.path.commonpath([os.path.normpath(root), real]) != os.path.normpath(root):
        raise SystemExit(f"install-wheel: {path} lies outside {root}")
    return real


def remove_previous(site: str, project: str) -> None:
    """Remove what an earlier install of PROJECT into SITE recorded (step 1)."""
    for name in sorted(os.listdir(site)) if os.path.isdir(site) else []:
        if not (name.startswith(project + "-") and name.endswith(".dist-info")):
            continue
        dist_info = os.path.join(site, name)
        record = os.path.join(dist_info, "RECORD")
        dirs: set[str] = set()
        if os.path.isfile(record):
            with open(record, encoding="utf-8", newline="") as f:
                for row in csv.reader(f):
                    if not row:
                        continue
                    path = os.path.normpath(os.path.join(site, row[0]))
                    if os.path.commonpath([site, path]) != site:
                        continue  # a script outside the site dir: rewritten in place by step 3
                    if os.path.lexists(path):
                        os.unlink(path)
                    dirs.add(os.path.dirname(path))
        shutil.rmtree(dist_info, ignore_errors=True)
        # Empty directories left behind, deepest first (the site dir itself stays).
        for d in sorted(dirs, key=len, reverse=True):
            while d != site and os.path.commonpath([site, d]) == site:
                try:
                    os.rmdir(d)
                except OSError:
                    break
                d = os.path.dirname(d)


def write_file(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".tmp-install"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def console_scripts(entry_points: str) -> dict[str, str]:
    """name -> "module:function" from a wheel's entry_points.txt."""
    cfg = configparser.ConfigParser(delimiters=("=",))
    cfg.optionxform = str  # type: ignore[assignment,method-assign]  # script names keep their case
    cfg.read_string(entry_points)
    return dict(cfg.items("console_scripts")) if cfg.has_section("console_scripts") else {}


def script_text(shebang: str, target: str) -> bytes:
    module, _, func = target.partition(":")
    return (
        f"#!{shebang}\n"
        f"# Installed by ostreewatch's make install from the wheel's console_scripts entry point.\n"
        f"import sys\n\n"
        f"from {module} import {func}\n\n"
        f'if __name__ == "__main__":\n'
        f"    sys.exit({func}())\n"
    ).encode()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("wheel")
    p.add_argument("--destdir", default="", help="staging root, as make's DESTDIR (default: none)")
    p.add_argument("--sitedir", required=True, help="the site directory as seen on the target")
    p.add_argument(
        "--script",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="install console script NAME into DIR as seen on the target (each script must be placed)",
    )
    p.add_argument("--shebang", default=sys.executable, help="the interpreter scripts name (default: this python)")
    p.add_argument(
        "--compile-python",
        default=shlex.quote(sys.executable),
        metavar="COMMAND",
        help="the python that byte-compiles, as a shell-quoted command (default: this python)",
    )
    p.add_argument(
        "--compile-root",
        default="/",
        metavar="DIR",
        help="where --compile-python sees / (a chroot's tree; DESTDIR must lie inside it)",
    )
    args = p.parse_args()
    os.umask(0o022)  # the modes set below are the modes installed, whatever the caller's umask

    destdir = os.path.abspath(args.destdir) if args.destdir else "/"
    if not os.path.isabs(args.sitedir):
        raise SystemExit(f"install-wheel: --sitedir must be absolute: {args.sitedir}")
    site = os.path.normpath(destdir + "/" + args.sitedir)
    scripts_dirs: dict[str, str] = {}
    for spec in args.script:
        name, sep, d = spec.partition("=")
        if not sep or not os.path.isabs(d):
            raise SystemExit(f"install-wheel: --script wants NAME=/ABSOLUTE/DIR, not {spec!r}")
        scripts_dirs[name] = d

    with zipfile.ZipFile(args.wheel) as whl:
        names = whl.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        project = dist_info.split("-")[0]
        wheel_meta = whl.read(f"{dist_info}/WHEEL").decode()
        if "Root-Is-Purelib: true" not in wheel_meta:
            raise SystemExit(f"install-wheel: {args.wheel} is not a pure-python wheel")
        if any(n.split("/")[0].endswith(".data") for n in names):
            raise SystemExit(f"install-wheel: {args.wheel} has a .data directory, which this installer does not place")
        entry_points = (
            whl.read(f"{dist_info}/entry_points.txt").decode() if f"{dist_info}/entry_points.txt" in names else ""
        )
        scripts = console_scripts(entry_points)
        if set(scripts) != set(scripts_dirs):
            raise SystemExit(f"install-wheel: the wheel's scripts {sorted(scripts)} != --script {sorted(scripts_dirs)}")

        remove_previous(site, project)
        installed: list[str] = []  # paths relative to the site dir
        for info in whl.infolist():
            if info.is_dir() or info.filename == f"{dist_info}/RECORD":
                continue
            rel = info.filename
            write_file(inside(site, os.path.join(site, rel)), whl.read(info), 0o644)
            installed.append(rel)

    # The wheel's top-level directories but its dist-info: what step 4 compiles.
    packages = sorted({rel.split("/")[0] for rel in installed if "/" in rel and not rel.startswith(dist_info + "/")})
    for name, target in sorted(scripts.items()):
        path = os.path.normpath(destdir + "/" + scripts_dirs[name] + "/" + name)
        write_file(path, script_text(args.shebang, target), 0o755)
        installed.append(os.path.relpath(path, site))

    # Byte-compile the packages (top-level directories but the dist-info) with the target's python.
    root = os.path.realpath(args.compile_root)
    real_site = os.path.realpath(site)
    if os.path.commonpath([root, real_site]) != root:
        raise SystemExit(f"install-wheel: the site dir {site} is not inside the compile root {root}")
    seen_site = "/" + os.path.relpath(real_site, root) if real_site != root else "/"
    for pkg in packages:
        cmd = [
            *shlex.split(args.compile_python),
            "-I",
            "-m",
            "compileall",
            "-q",
            "-f",
            "--invalidation-mode",
            "checked-hash",
            "-d",
            os.path.join(args.sitedir, pkg),  # the path tracebacks name: the installed one
            os.path.normpath(seen_site + "/" + pkg),
        ]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise SystemExit(f"install-wheel: byte-compiling failed: {shlex.join(cmd)}\n{r.stdout}")
        for dirpath, _dirs, files in os.walk(os.path.join(site, pkg)):
            for f in files:
                if f.endswith(".pyc"):
                    path = os.path.join(dirpath, f)
                    os.chmod(path, 0o644)
                    installed.append(os.path.relpath(path, site))

    write_file(os.path.join(site, dist_info, "INSTALLER"), INSTALLER.encode(), 0o644)
    installed.append(f"{dist_info}/INSTALLER")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for rel in sorted(set(installed)):
        with open(os.path.normpath(os.path.join(site, rel)), "rb") as f:
            data = f.read()
        writer.writerow([rel, record_hash(data), len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    write_file(os.path.join(site, dist_info, "RECORD"), out.getvalue().encode(), 0o644)
    for d, _dirs, _files in os.walk(os.path.join(site, dist_info)):
        os.chmod(d, 0o755)
    print(f"install-wheel: {project} into {site} ({len(installed)} files, compiled by {args.compile_python})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
