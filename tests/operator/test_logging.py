"""Logs a person can read at 3 a.m.: one event per line, library noise that needs nobody
left out, a failed connection said once."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import structlog

from xchange.log import configure_logging


class _Pipe(io.StringIO):
    """A stream whose writes let other threads run, as a write to a pipe or a terminal
    does (a StringIO alone never gives them the chance to come between two writes)."""

    def write(self, text: str) -> int:
        time.sleep(0)
        return super().write(text)


def test_library_and_xchange_events_never_share_a_line() -> None:
    """An APScheduler record was written inside a structlog JSON line (two events on one
    line) when two threads logged at once."""
    out = _Pipe()
    configure_logging(json=True, stream=out)
    ours = structlog.get_logger("xchange.test")
    theirs = logging.getLogger("apscheduler.executors.default")

    def write_ours() -> None:
        for n in range(2000):
            ours.info("route.summary", n=n, text="x" * 200)

    def write_theirs() -> None:
        for n in range(2000):
            theirs.warning("Run time of job %s was missed by %s", n, "0:00:01" + "y" * 200)

    threads = [threading.Thread(target=write_ours), threading.Thread(target=write_theirs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4000
    for line in lines:
        json.loads(line)  # each line one whole event


def test_routine_library_messages_and_paramikos_tracebacks_are_not_written() -> None:
    """ "maximum number of running instances reached" at warning on every poll while a big
    file was in hand (197 in 10 minutes); paramiko's traceback, a line at a time."""
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    logging.getLogger("apscheduler.scheduler").warning(
        'Execution of job "look" skipped: maximum number of running instances reached (1)'
    )
    for line in ("Exception (client): Error reading SSH protocol banner", "Traceback (most"):
        logging.getLogger("paramiko.transport").error(line)
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by 0:01")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "missed" in lines[0]
