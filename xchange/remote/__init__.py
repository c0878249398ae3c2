"""Endpoints by type, behind one protocol (:class:`Remote`): a registry of backends.

A backend is a :class:`Backend` in ``BACKENDS``, keyed by the ``type`` of its endpoints
in the configuration (``local``, ``sftp``), with how to open one. Each remote declares
what it can do (:class:`Capabilities`). Every backend passes the one contract suite in
``tests/contract/test_remote.py``; the in-memory backend (``remote/memory.py``) is for
tests and is given to a runner through its remote factory, not by configuration.
"""

from __future__ import annotations

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


def _open_local(label: str, cfg: Any) -> Remote:
    from xchange.remote.local import LocalRemote

    return LocalRemote(label, cfg.path)


def _open_sftp(label: str, cfg: Any) -> Remote:
    from xchange.remote.sftp import SFTPRemote

    return SFTPRemote(label, cfg)


BACKENDS: dict[str, Backend] = {
    "local": Backend("local", "a folder on this machine", _open_local),
    "sftp": Backend("sftp", "a folder on an SFTP server (paramiko)", _open_sftp),
}


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
]
