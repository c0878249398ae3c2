"""Endpoints by type, behind one protocol (:class:`Remote`).

Each kind of endpoint is declared once, in ``config.ENDPOINT_KINDS``: its configuration,
and the remote class that serves it (imported when an endpoint of the kind is first
opened). Each remote declares what it can do (:class:`Capabilities`) and counts the
sessions it opened. Every backend passes the one contract suite in
``tests/contract/test_remote.py``; the in-memory backend (``remote/memory.py``) is for
tests and is given to a runner through its remote factory, not by configuration.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from xchange.config import ENDPOINT_KINDS, Endpoint
from xchange.remote.base import Capabilities, DropOwner, FileInfo, Remote, SmallPut


def _where(kind: str) -> tuple[str, str]:
    module, _, name = ENDPOINT_KINDS[kind].remote.partition(":")
    return module, name


def open_remote(label: str, cfg: Endpoint) -> Remote:
    """The endpoint for a configuration entry; SFTP endpoints connect on first use."""
    module, name = _where(cfg.type)
    remote: Any = getattr(importlib.import_module(module), name)
    opened: Remote = remote.from_config(label, cfg)
    return opened


def sessions_opened() -> dict[str, int]:
    """Sessions this process opened, by endpoint, every kind of endpoint together (a kind
    whose remote was never imported opened none)."""
    opened: dict[str, int] = {}
    for kind in ENDPOINT_KINDS:
        module, name = _where(kind)
        loaded = sys.modules.get(module)
        if loaded is not None:
            opened.update(getattr(loaded, name).sessions_opened())
    return opened


__all__ = [
    "Capabilities",
    "DropOwner",
    "FileInfo",
    "Remote",
    "SmallPut",
    "open_remote",
    "sessions_opened",
]
