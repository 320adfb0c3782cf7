"""Turns inotify and mountinfo events into a "rescan soon" callback (skeleton; implementation follows).

The only module importing pyinotify.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


class Watcher:
    """Calls on_change(reason) when the boot state may have changed; never polls."""

    def __init__(
        self,
        paths: Any,
        on_change: Callable[[str], None],
        loop: asyncio.AbstractEventLoop,
        *,
        mount_min_interval: float = 0.2,
    ) -> None:
        self.paths = paths
        self.on_change = on_change
        self.loop = loop
        self.mount_min_interval = mount_min_interval

    def start(self) -> None:
        """Arm every watch; never raises for missing paths."""

    def stop(self) -> None:
        """Remove every watch and reader; idempotent."""

    def rescan_watches(self) -> None:
        """Re-arm watches onto the paths as they are now (after a swap, removal, remount)."""
