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
    def __init__(
        self, folder: Path, routes: list[str], kick: Callable[[list[str], str | None], None]
    ) -> None:
        self.folder = folder
        self.routes = routes
        self.kick = kick

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        if is_temporary(os.path.basename(path)):
            return
        try:
            name = Path(path).relative_to(self.folder).as_posix()
        except ValueError:
            name = None  # outside the folder: look at everything
        self.kick(self.routes, name)


class FolderWatcher:
    """Watches folders and calls ``kick(route names, file name)`` when a file in them
    changes (the name relative to the folder; None when unknown)."""

    def __init__(self, kick: Callable[[list[str], str | None], None]) -> None:
        self.kick = kick
        self._observer = Observer()
        self._count = 0

    def watch(self, folder: Path, routes: list[str], *, recursive: bool) -> bool:
        """Watch a folder; False if it cannot be watched (its routes then list it)."""
        if not folder.is_dir():
            log.warning(
                "watch.unavailable",
                folder=str(folder),
                error="no such folder",
                fallback="every look lists the folder",
            )
            return False
        try:
            handler = _Handler(folder, routes, self.kick)
            self._observer.schedule(handler, str(folder), recursive=recursive)
            self._count += 1
        except OSError as exc:  # inotify limits
            log.warning(
                "watch.unavailable",
                folder=str(folder),
                error=str(exc),
                fallback="every look lists the folder",
            )
            return False
        return True

    def start(self) -> bool:
        """Start watching; False if the watches could not be set up (inotify limits...)."""
        if not self._count:
            return False
        try:
            self._observer.start()
        except OSError as exc:
            log.warning("watch.unavailable", error=str(exc), fallback="every look lists")
            return False
        return True

    def stop(self) -> None:
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=10)
