"""Mount-namespace worker: run as `unshare --mount --propagation private PYTHON bench/mountns.py`.

It lives in its own mount namespace and obeys one command per stdin line,
answering one line each on stdout ("ok ..." or "err ..."):

  pid                    -> ok PID (its /proc/PID/mountinfo is the namespace's table)
  prepare N BASE         -> tmpfs on BASE, then N bind mounts under it: ok N SECONDS
  churn_start BASE       -> a thread mounts and unmounts a tmpfs under BASE as fast as it can
  churn_stop             -> ok OPS (mount+umount pairs done)
  mount TARGET           -> bind TARGET onto itself: ok MONOTONIC_TIME_AFTER_SYSCALL
  umount TARGET          -> detach the top mount on TARGET: ok MONOTONIC_TIME
  tmpfs TARGET           -> a tmpfs on TARGET: ok MONOTONIC_TIME
  quit                   -> exits; the namespace and all its mounts go with it

ctypes calls release the GIL, so the churn thread and the command loop run in parallel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time

MS_BIND = 4096
MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} {target}: {os.strerror(err)}")


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


class Churn:
    def __init__(self, base: str) -> None:
        self.dir = os.path.join(base, "churn")
        os.makedirs(self.dir, exist_ok=True)
        self.ops = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            _mount("churn", self.dir, "tmpfs", 0)
            _umount(self.dir)
            self.ops += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.ops


def main() -> None:
    churn = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        try:
            if cmd == "pid":
                reply = f"ok {os.getpid()}"
            elif cmd == "prepare":
                n, base = int(args[0]), args[1]
                t0 = time.monotonic()
                os.makedirs(base, exist_ok=True)
                _mount("stormbase", base, "tmpfs", 0)
                src = os.path.join(base, "src")
                os.mkdir(src)
                for i in range(n):
                    d = os.path.join(base, f"m{i}")
                    os.mkdir(d)
                    _mount(src, d, "", MS_BIND)
                reply = f"ok {n} {time.monotonic() - t0:.3f}"
            elif cmd == "churn_start":
                churn = Churn(args[0])
                reply = "ok"
            elif cmd == "churn_stop":
                reply = f"ok {churn.stop() if churn else 0}"
                churn = None
            elif cmd == "mount":
                _mount(args[0], args[0], "", MS_BIND)
                reply = f"ok {time.monotonic():.6f}"
            elif cmd == "tmpfs":
                _mount("owbench", args[0], "tmpfs", 0)
                reply = f"ok {time.monotonic():.6f}"
            elif cmd == "umount":
                _umount(args[0])
                reply = f"ok {time.monotonic():.6f}"
            elif cmd == "quit":
                print("ok", flush=True)
                break
            else:
                reply = f"err unknown command {cmd}"
        except (OSError, ValueError, IndexError) as exc:
            reply = f"err {exc}".replace("\n", " ")
        print(reply, flush=True)
    if churn:
        churn.stop()


if __name__ == "__main__":
    main()
