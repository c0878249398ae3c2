"""Endpoints by type: ``local`` folders and ``sftp`` servers behind one protocol."""

from __future__ import annotations

from xchange.config import Endpoint, LocalEndpoint
from xchange.remote.base import DropOwner, FileInfo, Remote, SmallPut


def open_remote(label: str, cfg: Endpoint) -> Remote:
    """The endpoint for a configuration entry; SFTP endpoints connect on first use."""
    if isinstance(cfg, LocalEndpoint):
        from xchange.remote.local import LocalRemote

        return LocalRemote(label, cfg.path)
    from xchange.remote.sftp import SFTPRemote

    return SFTPRemote(label, cfg)


__all__ = ["DropOwner", "FileInfo", "Remote", "SmallPut", "open_remote"]
