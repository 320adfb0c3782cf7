"""Safe reading under a sysroot: confined like chroot, never blocking, sizes capped.

Every path is resolved here, one component at a time: a symlink's target is
followed by this code (an absolute target counts from the sysroot, `..` stops
at the sysroot, as under chroot), so nothing outside the sysroot is ever read.
Files are opened O_NONBLOCK|O_NOCTTY|O_NOFOLLOW, checked with fstat and refused
unless regular: a FIFO or a device never blocks the reader. Sizes are capped.
No other program is ever run.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import OstreewatchError, SysrootError

# Linux's own limit (MAXSYMLINKS) on links followed while resolving one path.
MAX_LINKS = 40
ENTRY_MAX = 64 * 1024
SMALL_MAX = 64 * 1024

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC


class ReadRefused(OstreewatchError):
    """A path that cannot be read safely; `reason` is one of the class constants."""

    NOT_FOUND = "not-found"
    LOOP = "symlink-loop"
    NOT_REGULAR = "not-regular"
    TOO_BIG = "too-big"
    NOT_DIR = "not-a-directory"
    ERROR = "error"

    def __init__(self, reason: str, path: str, detail: str = "") -> None:
        super().__init__(f"{path}: {detail or reason}")
        self.reason = reason
        self.path = path


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_capped_fd(fd: int, path: str, cap: int) -> bytes:
    """Read at most `cap` bytes from an open regular file; more is TOO_BIG."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ReadRefused(ReadRefused.NOT_REGULAR, path, _file_kind(st.st_mode))
    if st.st_size > cap:  # /proc files say 0: the read loop below still caps them
        raise ReadRefused(ReadRefused.TOO_BIG, path, f"{st.st_size} bytes, limit {cap}")
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, min(65536, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise ReadRefused(ReadRefused.TOO_BIG, path, f"more than {cap} bytes")
    return b"".join(chunks)


def read_host_file(path: str, cap: int) -> bytes:
    """Read a file given by the caller (mountinfo, cmdline): not confined, but never blocking and capped."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ReadRefused(ReadRefused.NOT_REGULAR, path, _file_kind(st.st_mode))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise ReadRefused(ReadRefused.NOT_FOUND, path, "does not exist") from e
    except OSError as e:
        raise ReadRefused(ReadRefused.ERROR, path, e.strerror or str(e)) from e
    return _read_and_close(fd, path, cap)


def _read_and_close(fd: int, path: str, cap: int) -> bytes:
    """read_capped_fd, its OSError as ReadRefused(ERROR); the fd is closed in any case."""
    try:
        return read_capped_fd(fd, path, cap)
    except OSError as e:
        raise ReadRefused(ReadRefused.ERROR, path, e.strerror or str(e)) from e
    finally:
        os.close(fd)


class Root:
    """A directory read as if it were `/` (the sysroot, or the run directory)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise SysrootError(f"{path}: {e.strerror or e}") from e
        if not stat.S_ISDIR(st.st_mode):
            raise SysrootError(f"{path}: not a directory")
        if not os.access(self.path, os.R_OK | os.X_OK):
            raise SysrootError(f"{path}: permission denied")
        self._prefix = self.path.rstrip("/") + "/"
        # Directories (not links) already seen: a Root lives for one read, so this only
        # saves the repeated lstat of ostree/, ostree/deploy/... for every deployment.
        self._dirs: set[str] = set()
        # One Root serves one scan: directories and link targets seen are not looked up again
        # (1,000 entries all resolve through the same boot/loader and ostree/boot.N links).
        self._links: dict[str, str] = {}

    def real(self, rel: str) -> str:
        """The host path of a resolved sysroot-relative path."""
        return self._prefix + rel if rel else self.path

    def resolve(self, path: str, follow_last: bool = True, missing_ok: bool = False) -> str:
        """The sysroot-relative path ("a/b", "" for the root) with every link resolved inside the root.

        Raises ReadRefused(NOT_FOUND / LOOP / NOT_DIR / ERROR); with missing_ok, a
        missing component and what follows it are kept as named (a file to create).
        """
        done: list[str] = []
        todo = _split(path)
        todo.reverse()  # a stack: pop() gives the next component
        links = 0
        while todo:
            comp = todo.pop()
            if comp == "..":
                if done:
                    done.pop()
                continue
            candidate = done + [comp]
            joined = "/".join(candidate)
            if joined in self._dirs:
                done = candidate
                continue
            target = self._links.get(joined)
            if target is None:
                host = self._prefix + joined
                try:
                    st = os.lstat(host)
                except FileNotFoundError as e:
                    if missing_ok:
                        done = candidate
                        continue
                    raise ReadRefused(ReadRefused.NOT_FOUND, "/" + "/".join(candidate), "does not exist") from e
                except NotADirectoryError as e:
                    raise ReadRefused(ReadRefused.NOT_DIR, "/" + "/".join(done), "not a directory") from e
                except OSError as e:
                    raise ReadRefused(ReadRefused.ERROR, "/" + "/".join(candidate), e.strerror or str(e)) from e
                if stat.S_ISLNK(st.st_mode):
                    try:
                        target = os.readlink(host)
                    except OSError as e:
                        raise ReadRefused(ReadRefused.ERROR, "/" + "/".join(candidate), e.strerror or str(e)) from e
                    self._links[joined] = target
                elif stat.S_ISDIR(st.st_mode):
                    self._dirs.add(joined)
                elif todo:
                    raise ReadRefused(ReadRefused.NOT_DIR, "/" + joined, "not a directory")
            if target is not None and (todo or follow_last):
                links += 1
                if links > MAX_LINKS:
                    raise ReadRefused(
                        ReadRefused.LOOP, "/" + path.lstrip("/"), f"more than {MAX_LINKS} symbolic links (a loop?)"
                    )
                if target.startswith("/"):
                    done = []  # absolute: from the sysroot's root, as under chroot
                parts = _split(target)
                parts.reverse()
                todo.extend(parts)
                continue
            done = candidate
        return "/".join(done)

    def host_path(self, path: str) -> str:
        """The host path of PATH resolved inside the root, the missing part kept (where a writer writes).

        Raises OSError (ELOOP, ENOTDIR, or what lstat or readlink said) when it cannot resolve.
        """
        try:
            return self.real(self.resolve(path, missing_ok=True))
        except ReadRefused as e:
            if isinstance(e.__cause__, OSError):
                raise e.__cause__ from None
            raise OSError(errno.ELOOP if e.reason == ReadRefused.LOOP else errno.ENOTDIR, str(e)) from None

    def lstat(self, rel: str) -> os.stat_result | None:
        """lstat of an already resolved path; None when absent."""
        try:
            return os.lstat(self.real(rel))
        except OSError:
            return None

    def stat(self, path: str) -> os.stat_result | None:
        """stat after resolving inside the root; None when it does not resolve."""
        try:
            return self.lstat(self.resolve(path))
        except ReadRefused:
            return None

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def exists(self, path: str) -> bool:
        """True when the path (or a dangling link named so) is there."""
        try:
            rel = self.resolve(path, follow_last=False)
        except ReadRefused:
            return False
        return self.lstat(rel) is not None

    def readlink(self, path: str) -> str | None:
        """The target of a link (parents resolved); None when it is not a link."""
        try:
            rel = self.resolve(path, follow_last=False)
            return os.readlink(self.real(rel))
        except (ReadRefused, OSError):
            return None

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted; raises ReadRefused."""
        rel = self.resolve(path)
        try:
            return sorted(os.listdir(self.real(rel)))
        except NotADirectoryError as e:
            raise ReadRefused(ReadRefused.NOT_DIR, "/" + path.lstrip("/"), "not a directory") from e
        except FileNotFoundError as e:
            raise ReadRefused(ReadRefused.NOT_FOUND, "/" + path.lstrip("/"), "does not exist") from e
        except OSError as e:
            raise ReadRefused(ReadRefused.ERROR, "/" + path.lstrip("/"), e.strerror or str(e)) from e

    def open_regular(self, path: str) -> int:
        """An fd (O_RDONLY, non-blocking, close-on-exec) of a regular file inside the root; raises ReadRefused.

        The caller closes it. For what needs the file itself rather than its bytes (a lock probe).
        """
        rel = self.resolve(path)
        shown = "/" + path.lstrip("/")
        st = self.lstat(rel)
        if st is None:
            raise ReadRefused(ReadRefused.NOT_FOUND, shown, "does not exist")
        if not stat.S_ISREG(st.st_mode):  # refuse before open(): opening a device can have effects
            raise ReadRefused(ReadRefused.NOT_REGULAR, shown, _file_kind(st.st_mode))
        try:
            fd = os.open(self.real(rel), _OPEN_FLAGS)
        except FileNotFoundError as e:  # removed since the lstat
            raise ReadRefused(ReadRefused.NOT_FOUND, shown, "does not exist") from e
        except OSError as e:
            if e.errno == errno.ELOOP:  # swapped for a link since the lstat
                raise ReadRefused(ReadRefused.LOOP, shown, "became a symbolic link") from e
            raise ReadRefused(ReadRefused.ERROR, shown, e.strerror or str(e)) from e
        return fd

    def read(self, path: str, cap: int = SMALL_MAX) -> bytes:
        """The bytes of a regular file inside the root, at most `cap`; raises ReadRefused."""
        fd = self.open_regular(path)
        return _read_and_close(fd, "/" + path.lstrip("/"), cap)

    def read_text(self, path: str, cap: int = SMALL_MAX) -> str:
        """Like read(), decoded as UTF-8 with replacement (for key files and os-release)."""
        return self.read(path, cap).decode("utf-8", "replace")
