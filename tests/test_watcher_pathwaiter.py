"""watcher.PathWaiter: the daemon's wait for the bus socket, on the watcher's inotify library."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ostreewatch.watcher import PathWaiter


async def _ends_when(waiter: PathWaiter, *, timeout: float) -> bool:
    try:
        await asyncio.wait_for(waiter.wait(), timeout)
        return True
    except asyncio.TimeoutError:
        return False


def test_waits_for_the_file_and_not_for_others(tmp_path: Path) -> None:
    sock = tmp_path / "bus_socket"

    async def scenario() -> None:
        waiter = PathWaiter(str(sock))
        try:
            (tmp_path / "unrelated").write_text("")
            assert not await _ends_when(waiter, timeout=0.3)
            asyncio.get_running_loop().call_later(0.1, sock.write_text, "")
            assert await _ends_when(waiter, timeout=5)
        finally:
            waiter.close()
            waiter.close()  # idempotent: the daemon closes it on every path out

    asyncio.run(scenario())


def test_missing_directory_watches_the_nearest_ancestor(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "dbus" / "bus_socket"

    async def scenario() -> None:
        waiter = PathWaiter(str(sock))
        try:
            asyncio.get_running_loop().call_later(0.1, (tmp_path / "run").mkdir)
            assert await _ends_when(waiter, timeout=5)  # any creation there: the caller looks again
        finally:
            waiter.close()

    asyncio.run(scenario())
