"""Crash points for the exactly-once tests.

``checkpoint(name)`` does nothing unless the environment variable ``XCHANGE_CRASH_AT``
names this point, in which case the process kills itself with SIGKILL, exactly as a
power cut or the OOM killer would, at that instant. The points:

``after-claim``, ``before-rename`` (the temporary file is complete on the target),
``after-rename`` (the output is under its final name; the journal does not know yet),
``after-output`` (the journal has the output), ``before-manifest`` (every data file of
a source delivered, its target manifest not yet), ``before-archive`` (all delivered),
``after-quarantine`` (quarantined in the journal, still in the drop folder).
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("XCHANGE_CRASH_AT")


def checkpoint(name: str) -> None:
    """Die here if told to (test hook; free otherwise)."""
    if name == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
