"""Starting xchange as a separate process, as cron or systemd would (for the crash, chaos,
daemon tests and the soak and latency benchmarks)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def xchange_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's XCHANGE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCHANGE_")}
    env.update(extra)
    return env


def xchange_argv(config: Path, *args: str) -> list[str]:
    """``python -m xchange --log-format json ARGS --config CONFIG``."""
    return [sys.executable, "-m", "xchange", "--log-format", "json", *args, "--config", str(config)]
