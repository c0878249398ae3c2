"""A TCP proxy on 127.0.0.1 that delays each direction by a set time, for benchmarks (and
tests) over a real-world link: traffic control's netem is not available on these machines.

Every chunk read from one side is forwarded to the other ``delay`` seconds after it was
read, in order; a round trip through the proxy costs ``2 * delay`` more. Bandwidth is not
limited (loopback's), so what it shows is the cost of round trips.
"""

from __future__ import annotations

import contextlib
import heapq
import socket
import threading
import time
from dataclasses import dataclass

from tests.tcpproxy import TcpProxy


@dataclass
class LatencyProxy(TcpProxy):
    #: Seconds each direction is delayed (a 40 ms round trip: 0.020).
    delay: float = 0.0

    def serve(self, client: socket.socket) -> None:
        upstream = self.upstream(timeout=None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for a, b in ((client, upstream), (upstream, client)):
            _Direction(a, b, self.delay, self._stop).start()


class _Direction:
    """One direction of one connection: read as it comes, write each chunk ``delay``
    seconds after it was read."""

    def __init__(
        self, src: socket.socket, dst: socket.socket, delay: float, stop: threading.Event
    ) -> None:
        self.src, self.dst, self.delay, self.stop = src, dst, delay, stop
        self.queue: list[tuple[float, int, bytes]] = []
        self.cond = threading.Condition()
        self.seq = 0
        self.closed = False

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.src.recv(1 << 16)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.closed = True
                    self.cond.notify()
                    return
                heapq.heappush(self.queue, (time.monotonic() + self.delay, self.seq, data))
                self.seq += 1
                self.cond.notify()

    def _write(self) -> None:
        while not self.stop.is_set():
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait(0.5)
                if not self.queue and self.closed:
                    with contextlib.suppress(OSError):
                        self.dst.shutdown(socket.SHUT_WR)
                    return
                due, _, data = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.cond:
                heapq.heappop(self.queue)
            try:
                self.dst.sendall(data)
            except OSError:
                return


__all__ = ["LatencyProxy"]
