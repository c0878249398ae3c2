"""Starting xchange as a separate process, as cron or systemd would (for the crash, chaos,
daemon tests and the soak and latency benchmarks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def xchange_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's XCHANGE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCHANGE_")}
    env.update(extra)
    return env


def xchange_argv(config: Path, *args: str) -> list[str]:
    """``python -m xchange --log-format json ARGS --config CONFIG``."""
    return [sys.executable, "-m", "xchange", "--log-format", "json", *args, "--config", str(config)]


def run_once(config: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """``xchange run --once`` as cron starts it; ``crash_at``: the fault checkpoint at which
    it kills itself (see xchange/faults.py)."""
    env = xchange_env(XCHANGE_CRASH_AT=crash_at) if crash_at else xchange_env()
    return subprocess.run(
        xchange_argv(config, "run", "--once"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` every 50 ms, failing after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def log_events(log: Path, name: str, **fields: Any) -> list[dict[str, Any]]:
    """The JSON log's events called ``name`` (with these field values), in order."""
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
            found.append(event)
    return found
