"""Local drop folders watched with watchdog (the only module that imports it).

Events are hints, never the source of truth: a handler only says "look at these
routes soon" and does no I/O. The daemon then lists the folder and decides readiness
itself, and a periodic full rescan catches whatever events were lost (inotify queue
overflow, network mounts that send none).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from xchange.remote.base import is_temporary

log = structlog.get_logger(__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, routes: list[str], kick: Callable[[list[str]], None]) -> None:
        self.routes = routes
        self.kick = kick

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        if is_temporary(os.path.basename(path)):
            return
        self.kick(self.routes)


class FolderWatcher:
    """Watches folders and calls ``kick(route names)`` when something changes in them."""

    def __init__(self, kick: Callable[[list[str]], None]) -> None:
        self.kick = kick
        self._observer = Observer()
        self._count = 0

    def watch(self, folder: Path, routes: list[str], *, recursive: bool) -> None:
        try:
            self._observer.schedule(_Handler(routes, self.kick), str(folder), recursive=recursive)
            self._count += 1
        except OSError as exc:  # missing folder, inotify limits: the periodic rescan remains
            log.warning(
                "watch.unavailable",
                folder=str(folder),
                error=str(exc),
                fallback="periodic rescan only",
            )

    def start(self) -> None:
        if self._count:
            self._observer.start()

    def stop(self) -> None:
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=10)
