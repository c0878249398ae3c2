"""How far the bytes a worker is moving have got: for a person who waits (a stop that
waits for the files in hand, ``run --once`` at a terminal), never for a log.

Whatever moves a file's bytes says so on its own thread: ``moving(name, total)`` around
the move, ``advance(n)`` as bytes go (the SFTP writer), or ``reached(n)`` (OpenSSH's client,
watched from outside). ``of_thread(ident)`` gives the meter of another thread's move: the
file in hand on that worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Meter:
    """One move of bytes: what, how many, how far."""

    what: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def describe(self, now: float | None = None) -> str:
        """``uploading WMS.xml: 120.0 of 400.0 MB, 45.2 MB/s, 6 s left``."""
        now = time.monotonic() if now is None else now
        said = f"{self.what}: {self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB"
        elapsed = now - self.started
        if self.done and elapsed > 0.5:
            rate = self.done / elapsed
            said += f", {rate / 1e6:.1f} MB/s"
            if self.total > self.done:
                said += f", {(self.total - self.done) / rate:.0f} s left"
        return said


_lock = threading.Lock()
_meters: dict[int, Meter] = {}


@contextmanager
def moving(what: str, total: int) -> Iterator[Meter]:
    """This thread moves ``total`` bytes (``what``: ``uploading NAME``) while the block
    lasts."""
    meter = Meter(what, total)
    ident = threading.get_ident()
    with _lock:
        outer = _meters.get(ident)
        _meters[ident] = meter
    try:
        yield meter
    finally:
        with _lock:
            if outer is None:
                _meters.pop(ident, None)
            else:
                _meters[ident] = outer


def advance(count: int) -> None:
    """``count`` more bytes moved by this thread's move (if it is metered)."""
    meter = _meters.get(threading.get_ident())
    if meter is not None:
        meter.done += count


def reached(done: int) -> None:
    """This thread's move has moved ``done`` bytes in all (if it is metered)."""
    meter = _meters.get(threading.get_ident())
    if meter is not None:
        meter.done = max(meter.done, done)


def of_thread(ident: int) -> Meter | None:
    """The move a thread is making, if any."""
    with _lock:
        return _meters.get(ident)


__all__ = ["Meter", "advance", "moving", "of_thread", "reached"]
