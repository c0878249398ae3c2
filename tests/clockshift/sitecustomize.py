"""A wall clock that a test can step, for a real xchange process (libfaketime cannot
serve: with Python 3.11 its clock_nanosleep breaks ``time.sleep``).

Put this folder on PYTHONPATH and name a file in XCHANGE_TEST_CLOCK_SHIFT holding a
number of seconds: ``time.time()`` and ``datetime.now()`` of the process are shifted by
it, re-read every 50 ms, as when NTP or a person steps the system clock. The monotonic
clock, and every wait measured on it, is left alone, as a real step leaves it.
"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time

_FILE = os.environ.get("XCHANGE_TEST_CLOCK_SHIFT")

if _FILE:
    _real_time = _time.time
    _real_time_ns = _time.time_ns
    _cache = [0.0, -1.0]  # shift, monotonic time it was read

    def _shift() -> float:
        now = _time.monotonic()
        if now - _cache[1] > 0.05:
            try:
                with open(_FILE, encoding="ascii") as fh:
                    _cache[0] = float(fh.read().strip() or 0)
            except (OSError, ValueError):
                pass
            _cache[1] = now
        return _cache[0]

    def _time_shifted() -> float:
        return _real_time() + _shift()

    def _time_ns_shifted() -> int:
        return _real_time_ns() + int(_shift() * 1e9)

    _time.time = _time_shifted
    _time.time_ns = _time_ns_shifted

    _Real = _datetime.datetime

    class _Any(type):
        """Every datetime is one of these (those made by C code too)."""

        def __instancecheck__(cls, obj: object) -> bool:
            return isinstance(obj, _Real)

        def __subclasscheck__(cls, sub: type) -> bool:
            return issubclass(sub, _Real)

    class _ShiftedDatetime(_Real, metaclass=_Any):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return _Real.fromtimestamp(_time_shifted(), tz)

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def, override]
            return _Real.fromtimestamp(_time_shifted(), _datetime.UTC).replace(
                tzinfo=None
            )

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def, override]
            return _Real.fromtimestamp(_time_shifted())

    _datetime.datetime = _ShiftedDatetime  # type: ignore[misc]
