"""The ``xchange`` command: a thin click layer over the library.

This package is the only place that imports click.
"""

from xchange.cli import records as _records  # noqa: F401 - registers the journal commands
from xchange.cli.main import main

__all__ = ["main"]
