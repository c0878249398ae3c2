"""A TCP fault proxy on 127.0.0.1 between xchange and the test sshd.

Modes, switchable while it runs:
- ``pass``: forward both ways;
- ``drop_after``: forward, then cut the connection once ``limit`` bytes went upstream
  (with ``count = "down"``: came back from the server);
- ``stall_after``: forward ``limit`` bytes upstream, then stop forwarding (both ways) but
  keep the connection open, as a dead network path does;
- ``stall``: accept and never answer;
- ``refuse``: close every new connection at once.
``faulty_connections`` limits how many new connections get the fault (then ``pass``);
``cuts`` (when not negative) how many connections ``drop_after`` cuts in all (``cut`` counts
them). ``rate`` (bytes per second, 0: unlimited) paces each direction of each connection,
as a link of that bandwidth would (for benchmarks).

``freeze()`` stops every path at once, open connections too (a network partition, a hung
server: bytes are taken and never answered); ``thaw()`` cuts the frozen connections (as a
long partition does) and forwards new ones again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

from tests.tcpproxy import TcpProxy

#: Bytes a paced connection may move at once after a pause.
BURST = 256 * 1024


@dataclass
class FaultProxy(TcpProxy):
    mode: str = "pass"
    limit: int = 0
    faulty_connections: int = 1_000_000
    count: str = "up"
    cuts: int = -1
    cut: int = 0
    rate: float = 0.0
    _frozen: threading.Event = field(default_factory=threading.Event, kw_only=True)
    _cut_lock: threading.Lock = field(default_factory=threading.Lock, kw_only=True)

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()
        held, self._sockets = self._sockets, []
        for s in held:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _cut_now(self) -> bool:
        with self._cut_lock:
            if self.cuts >= 0 and self.cut >= self.cuts:
                return False
            self.cut += 1
            return True

    def serve(self, client: socket.socket) -> None:
        mode = self.mode if self.connections <= self.faulty_connections else "pass"
        if mode == "refuse":
            client.close()
            return
        if mode == "stall" or self._frozen.is_set():
            return  # accepted, never answered
        try:
            upstream = self.upstream()
        except OSError:  # the server is away (restarting): as it would, refuse
            client.close()
            return
        budget = [self.limit if mode in ("drop_after", "stall_after") else -1]
        stalled = threading.Event()
        down = self.count == "down"
        for src, dst, counted in ((client, upstream, not down), (upstream, client, down)):
            threading.Thread(
                target=self._pump,
                args=(src, dst, counted, mode, budget, stalled),
                daemon=True,
            ).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        counted: bool,
        mode: str,
        budget: list[int],
        stalled: threading.Event,
    ) -> None:
        # Pacing: a bucket of at most BURST bytes, refilled at ``rate`` (an idle
        # connection, a login, earns no more than that).
        credit, last = float(BURST), time.monotonic()
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if self.rate and data:
                    now = time.monotonic()
                    credit = min(float(BURST), credit + (now - last) * self.rate) - len(data)
                    last = now
                    if credit < 0:
                        time.sleep(-credit / self.rate)
                if not data:
                    break
                if stalled.is_set() or self._frozen.is_set():
                    continue  # swallow: the path is dead but nobody says so
                if counted and budget[0] >= 0:
                    budget[0] -= len(data)
                    if budget[0] < 0:
                        if mode == "drop_after" and self._cut_now():
                            break
                        if mode == "drop_after":
                            budget[0] = -1  # no cut left: forwarded as it is
                            dst.sendall(data)
                            continue
                        stalled.set()
                        continue
                dst.sendall(data)
        except OSError:
            pass
        if mode != "stall_after" or not stalled.is_set():
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
