"""Endpoints by type, behind one protocol (:class:`Remote`): a registry of backends.

A backend is a :class:`Backend` in ``BACKENDS``, keyed by the ``type`` of its endpoints
in the configuration (``local``, ``sftp``), with how to open one. Each remote declares
what it can do (:class:`Capabilities`). Every backend passes the one contract suite in
``tests/contract/test_remote.py``; the in-memory backend (``remote/memory.py``) is for
tests and is given to a runner through its remote factory, not by configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xchange.config import Endpoint
from xchange.remote.base import Capabilities, DropOwner, FileInfo, Remote, SmallPut


@dataclass(frozen=True, slots=True)
class Backend:
    """One kind of endpoint: its configuration ``type`` and how to open one."""

    type: str
    summary: str
    #: (the endpoint's name, its configuration) -> an unconnected remote.
    open: Callable[[str, Any], Remote]
    #: Sessions this process opened to endpoints of this type, by endpoint (for the
    #: metrics; none for a kind without sessions).
    sessions: Callable[[], dict[str, int]] = dict


def _open_local(label: str, cfg: Any) -> Remote:
    from xchange.remote.local import LocalRemote

    return LocalRemote(label, cfg.path)


def _open_sftp(label: str, cfg: Any) -> Remote:
    from xchange.remote.sftp import SFTPRemote

    return SFTPRemote(label, cfg)


def _sftp_sessions() -> dict[str, int]:
    sftp = sys.modules.get("xchange.remote.sftp")  # (not loaded: none opened)
    return {} if sftp is None else sftp.sessions_opened()


BACKENDS: dict[str, Backend] = {
    "local": Backend("local", "a folder on this machine", _open_local),
    "sftp": Backend(
        "sftp", "a folder on an SFTP server (paramiko)", _open_sftp, sessions=_sftp_sessions
    ),
}


def sessions_opened() -> dict[str, int]:
    """Sessions this process opened, by endpoint, every kind of endpoint together."""
    opened: dict[str, int] = {}
    for backend in BACKENDS.values():
        opened.update(backend.sessions())
    return opened


def open_remote(label: str, cfg: Endpoint) -> Remote:
    """The endpoint for a configuration entry; SFTP endpoints connect on first use."""
    return BACKENDS[cfg.type].open(label, cfg)


__all__ = [
    "BACKENDS",
    "Backend",
    "Capabilities",
    "DropOwner",
    "FileInfo",
    "Remote",
    "SmallPut",
    "open_remote",
    "sessions_opened",
]
