"""xchange: a file-exchange sync daemon for systems that only speak files.

The library API the CLI is built on::

    from xchange import load_config, open_journal, Runner

    config = load_config("config/demo.toml")
    runner = Runner(config, open_journal(config.journal))
    for result in runner.run_once():
        print(result.summary())
"""

from __future__ import annotations

__version__ = "0.1.0"

from xchange.config import AppConfig, load_config
from xchange.errors import XchangeError
from xchange.journal import open_journal
from xchange.pipeline import Pipeline
from xchange.runner import RouteResult, Runner
from xchange.sink import Output

__all__ = [
    "AppConfig",
    "Output",
    "Pipeline",
    "RouteResult",
    "Runner",
    "XchangeError",
    "__version__",
    "load_config",
    "open_journal",
]
