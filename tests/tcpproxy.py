"""One TCP proxy loop on 127.0.0.1 in front of a server the tests start: the fault proxy
(``faultproxy.py``: cut, stall, freeze) and the latency proxy (``latencyproxy.py``: each
direction delayed) differ only in what each connection gets (``serve``)."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from typing import Self


@dataclass
class TcpProxy:
    upstream_port: int
    #: The port it listens on (once started).
    port: int = field(default=0, kw_only=True)
    #: Connections accepted so far.
    connections: int = field(default=0, kw_only=True)
    _stop: threading.Event = field(default_factory=threading.Event, kw_only=True)
    _sockets: list[socket.socket] = field(default_factory=list, kw_only=True)

    def start(self) -> Self:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self._accept, daemon=True, name=f"{type(self).__name__}-accept"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def upstream(self, timeout: float | None = 5) -> socket.socket:
        """A new connection to the server (kept, closed at ``stop``)."""
        conn = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=timeout)
        conn.settimeout(None)
        self._sockets.append(conn)
        return conn

    def serve(self, client: socket.socket) -> None:
        """What one accepted connection gets (in the accept loop's thread: start threads
        for anything that waits)."""
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._sockets.append(client)
            self.serve(client)
