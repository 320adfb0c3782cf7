"""The helper processes (ostreewatch._writehelper, ostreewatch._deployhelper): one way to run them.

Each is `PYTHON -m MODULE` run from /, with only this package on its
PYTHONPATH; it reads one JSON request line on stdin and writes one JSON answer
line on stdout: {"ok": true, ...} or {"ok": false, "kind": KIND, "error": TEXT}.
A helper may keep working after its answer until its stdin is closed (the
deploy helper holds ostree's sysroot lock until then), so the runner reads the
answer first and releases the helper after. Blocking: run it in an executor.

A helper that outlives its timeout is never killed: it may be in the middle of
ostree's write with /boot frozen (ostree's thaw watchdog releases it); a
thread waits for it and reaps it, and the caller gets WriteFailed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import threading
import time
from typing import Any

from ostreewatch import errors
from ostreewatch._writehelper import ContentChanged

# The directory holding the ostreewatch package: the helpers need this package, not the daemon's venv.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MAX_ANSWER = 1 << 20


def helper_env() -> dict[str, str]:
    """The environment of every helper: the daemon's, with PYTHONPATH naming only this package."""
    return dict(os.environ, PYTHONPATH=PACKAGE_PARENT)


class Helper:
    """One running helper: ask() sends the request and reads the answer, release() lets it finish."""

    def __init__(self, python: str, module: str, what: str) -> None:
        self.what = what  # "the deployment helper", in messages
        # A file, not a pipe: a chatty helper can never block on it; closed by __exit__. A memfd,
        # not a temp file: the unit's sandbox (units/ostreewatch.service) leaves no writable /tmp.
        self._stderr = os.fdopen(os.memfd_create("ostreewatch-helper-stderr", os.MFD_CLOEXEC), "w+b")
        try:
            self._proc = subprocess.Popen(
                [python, "-m", module],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=helper_env(),
                cwd="/",
            )
        except OSError as e:
            self._stderr.close()
            raise errors.WriteFailed(f"cannot run {what} ({python}): {e}") from None

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        finally:
            self._stderr.close()

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send REQUEST, return the answer (ok or not); WriteFailed when the helper gives none."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died before reading: its exit status and stderr say why, below
        line = self._read_line(timeout)
        try:
            answer = json.loads(line.decode("utf-8", "replace"))
            if not isinstance(answer, dict):
                raise ValueError(answer)
        except ValueError:
            self.release(timeout)
            raise errors.WriteFailed(f"{self.what} exited with {proc.returncode}: {self.stderr_tail()}") from None
        return answer

    def _read_line(self, timeout: float) -> bytes:
        """The first line on the helper's stdout; b"" when it closed stdout first (WriteFailed past TIMEOUT)."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data and len(data) < _MAX_ANSWER:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self._abandon()
                    raise errors.WriteFailed(f"{self.what} did not answer in {timeout:.0f} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\n", 1)[0]

    def release(self, timeout: float = 60.0) -> None:
        """Close the helper's stdin (it finishes: the deploy helper unlocks) and reap it."""
        proc = self._proc
        if proc.returncode is not None:
            return
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._abandon()
            raise errors.WriteFailed(f"{self.what} did not finish in {timeout:.0f} s") from None
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def _abandon(self) -> None:
        """Leave the helper running (never killed: see the module docstring); a thread reaps it."""
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        threading.Thread(target=proc.wait, name="helper-reaper", daemon=True).start()

    def stderr_tail(self, limit: int = 500) -> str:
        """The end of what the helper wrote on stderr."""
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", "replace").strip()[-limit:]
        except (OSError, ValueError):
            return ""


def run(python: str, module: str, what: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run a helper for one request and let it finish; its answer (WriteFailed when it gives none)."""
    with Helper(python, module, what) as helper:
        return helper.ask(request, timeout)


# An answer's kind -> the error it stands for; any other kind is WriteFailed.
KINDS: dict[str, type[errors.OstreewatchError]] = {
    "busy": errors.Busy,
    "changed": ContentChanged,
    "no-such-deployment": errors.NoSuchDeployment,
    "staged": errors.NotSupported,
}


def check(answer: dict[str, Any], context: str = "") -> dict[str, Any]:
    """ANSWER when it is ok; else raise the error its kind names (WriteFailed prefixed with CONTEXT)."""
    if answer.get("ok"):
        return answer
    text = str(answer.get("error", ""))
    cls = KINDS.get(str(answer.get("kind")), errors.WriteFailed)
    if cls is errors.WriteFailed and context:
        text = f"{context}: {text}"
    raise cls(text)
