"""Connections and worker threads: each thread has its own endpoints (an SFTP session is
never shared between threads), each route its worker pool and its uploader thread.

The remote factory is injectable: tests and tools can give every endpoint another
backend (the in-memory one, say) without touching the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xchange.config import Endpoint
from xchange.remote import Remote, open_remote

#: Makes the remote for an endpoint: (its name, its configuration) -> an unconnected Remote.
RemoteFactory = Callable[[str, Endpoint], Remote]


class Sessions:
    """This process's connections to the configured endpoints, one set per thread."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        factory: RemoteFactory = open_remote,
        *,
        partials: Path | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.factory = factory
        #: Where remotes that resume transfers cut short keep their records.
        self.partials = partials
        self._local = threading.local()
        self._all: list[dict[str, Remote]] = []
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str], ThreadPoolExecutor] = {}

    def remote(self, name: str) -> Remote:
        """This thread's connection to an endpoint (opened on first use, then reused)."""
        remotes: dict[str, Remote] | None = getattr(self._local, "remotes", None)
        if remotes is None:
            remotes = self._local.remotes = {}
            with self._lock:
                self._all.append(remotes)
        if name not in remotes:
            remote = self.factory(name, self.endpoints[name])
            keep = getattr(remote, "keep_partials", None)
            if self.partials is not None and callable(keep):
                keep(self.partials)
            remotes[name] = remote
        return remotes[name]

    def pool(self, route: str, role: str, size: int) -> ThreadPoolExecutor:
        """The route's threads for ``role`` (kept between runs, with their connections)."""
        with self._lock:
            key = (route, role)
            if key not in self._pools:
                self._pools[key] = ThreadPoolExecutor(
                    size, thread_name_prefix=f"xchange-{route}-{role}"
                )
            return self._pools[key]

    def stop_pools(self) -> None:
        """Wait for every pool's work and end its threads."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.shutdown(wait=True)

    def close(self) -> None:
        """Close every thread's connections (when no route is running)."""
        self.stop_pools()
        with self._lock:
            for remotes in self._all:
                for remote in remotes.values():
                    remote.close()
                remotes.clear()


__all__ = ["RemoteFactory", "Sessions"]
