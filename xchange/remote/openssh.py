"""Big transfers through OpenSSH's own `sftp` client, which moves bulk data faster than
paramiko. Host keys are checked against the endpoint's pinned known_hosts with
StrictHostKeyChecking=yes, exactly as paramiko does; only key authentication without a
passphrase is used (nothing is typed into a prompt). Renames, checks and everything else
stay with paramiko.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from xchange.config import SFTPEndpoint
from xchange.errors import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyMismatch,
    RemoteError,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteTimeout,
    RemoteUnavailable,
)


def available(cfg: SFTPEndpoint) -> bool:
    """Whether big transfers of this endpoint can go through the OpenSSH client."""
    return (
        cfg.accelerate_mb > 0
        and cfg.key_file is not None
        and cfg.key_passphrase is None
        and cfg.password is None
        and shutil.which("sftp") is not None
    )


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def transfer(cfg: SFTPEndpoint, label: str, command: str, local: Path, remote: str) -> None:
    """Run one `put` or `get` with OpenSSH's sftp.

    Raises:
        ConnectionLost / RemoteUnavailable: the transfer failed (retryable).
    """
    batch = f"{command} {_quote(str(local))} {_quote(remote)}\n"
    if command == "get":
        batch = f"get {_quote(remote)} {_quote(str(local))}\n"
    argv = [
        "sftp",
        "-q",
        "-b",
        "-",
        # More requests in flight than the default 64 (request size stays the portable
        # 32 KiB: some servers refuse bigger writes).
        "-R",
        "128",
        "-i",
        str(cfg.key_file),
        "-P",
        str(cfg.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={cfg.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"ConnectTimeout={int(cfg.timeouts.connect)}",
        "-o",
        f"ServerAliveInterval={max(1, int(cfg.timeouts.operation) // 3)}",
        "-o",
        "ServerAliveCountMax=3",
        f"{cfg.user}@{cfg.host}",
    ]
    try:
        done = subprocess.run(
            argv, input=batch.encode(), capture_output=True, check=False, env=child_environment()
        )
    except OSError as exc:
        raise RemoteUnavailable(f"{label}: cannot start sftp: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        raise _classified(f"{label}: OpenSSH sftp {command} failed: {reason}", reason)


def _classified(message: str, reason: str) -> RemoteError:
    """The error class of what OpenSSH's sftp printed last."""
    low = reason.lower()
    if "permission denied" in low and "publickey" not in low:
        return RemotePermissionDenied(message)
    if "no such file" in low:
        return RemoteNotFound(message)
    if "host key verification failed" in low:
        return HostKeyMismatch(message)
    if "connection refused" in low or "no route to host" in low:
        return RemoteUnavailable(message)
    if "timed out" in low or "timeout" in low:
        return RemoteTimeout(message)
    if "permission denied (publickey" in low:
        return AuthenticationFailed(message)
    return ConnectionLost(message)


def child_environment() -> dict[str, str]:
    """The environment of an OpenSSH child: what it needs to run, nothing else (no
    password variable, no other secret of the parent's)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")
    return {k: v for k, v in os.environ.items() if k in keep}
