"""Big transfers through OpenSSH's own `sftp` client, which moves bulk data faster than
paramiko. Host keys are checked against the endpoint's pinned known_hosts with
StrictHostKeyChecking=yes, exactly as paramiko does; only key authentication without a
passphrase is used (nothing is typed into a prompt). Renames, checks and everything else
stay with paramiko.

Reliability: the client's keepalives prove only that the SSH connection is up, not that
the server's SFTP process still answers; one that died or stalled left the client waiting
for ever. A watchdog ends the client once the file has not moved for the endpoint's
operation timeout, and the transfer fails as a retryable timeout. Each client runs in a
process group of its own, with the ``ssh`` it starts: a terminal's Ctrl-C does not reach
it (a first stop signal lets the file in hand finish), and ending the group ends both.
:func:`end_children` ends every client still running, for an exit that cannot wait.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO

from xchange.config import SFTPEndpoint, Timeouts
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
from xchange.progress import reached
from xchange.remote.resume import REQUESTS

#: Seconds a client asked to end (SIGTERM) gets before it is killed (SIGKILL).
END_GRACE = 1.0

#: Whether a client's progress can be seen (Linux's /proc): without it none is ended for
#: making no progress.
WATCHABLE = os.path.isdir("/proc/self/fdinfo")

#: The clients running now, by pid. Re-entrant: :func:`end_children` runs in a signal
#: handler, which may interrupt the main thread while it holds the lock.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.RLock()


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


def transfer(
    cfg: SFTPEndpoint,
    label: str,
    command: str,
    local: Path,
    remote: str,
    *,
    watch: Callable[[int], None] | None = None,
) -> None:
    """Run one `put` or `get` with OpenSSH's sftp (`reput`, `reget`: from where the
    partial file ends); end it if the file stops moving. ``watch`` is told each new
    position of the client in the local file.

    Raises:
        RemoteTimeout: the file did not move for the operation timeout (retryable); the
            client was ended, and what it wrote is the caller's to remove.
        ConnectionLost / RemoteUnavailable: the transfer failed (retryable).
    """
    batch = f"{command} {_quote(str(local))} {_quote(remote)}\n"
    if command in ("get", "reget"):
        batch = f"{command} {_quote(remote)} {_quote(str(local))}\n"
    with tempfile.TemporaryFile() as said:
        child = _start(_argv(cfg), batch.encode(), said, label)
        try:
            progress = Progress(child.pid, command.removeprefix("re"), local)
            stalled = _stalled(child, progress, cfg.timeouts, watch)
        finally:
            _end(child)
        if stalled is not None:
            raise RemoteTimeout(f"{label}: OpenSSH sftp {command}: {stalled}")
        if child.returncode != 0:
            said.seek(0)
            text = said.read().decode(errors="replace")
            silent = f"it ended with status {child.returncode}, saying nothing"
            reason = (text.strip().splitlines() or [silent])[-1]
            raise _classified(f"{label}: OpenSSH sftp {command} failed: {reason}", reason)


def _argv(cfg: SFTPEndpoint) -> list[str]:
    return [
        "sftp",
        "-q",
        "-b",
        "-",
        # More requests in flight than the default 64 (request size stays the portable
        # 32 KiB: some servers refuse bigger writes).
        "-R",
        str(REQUESTS),
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


def _start(argv: list[str], batch: bytes, said: IO[bytes], label: str) -> subprocess.Popen[bytes]:
    """Start the client in a process group of its own, known to :func:`end_children`
    until :func:`_end` forgets it.

    Not PR_SET_PDEATHSIG from a ``preexec_fn``: Python code between fork and exec can
    deadlock a threaded process (the daemon is one), and the signal would reach the client
    but not its ``ssh``, which stays connected once the client has gone. The group is
    ended explicitly instead, on every way out of :func:`transfer` and on an exit now."""
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=said,  # a file, not a pipe: nothing to drain while the watchdog waits
            env=child_environment(),
            process_group=0,
        )
    except OSError as exc:
        raise RemoteUnavailable(f"{label}: cannot start sftp: {exc}") from None
    with _CHILDREN_LOCK:
        _CHILDREN[child.pid] = child
    assert child.stdin is not None
    with suppress(OSError):  # gone already: its exit status and stderr say why
        child.stdin.write(batch)  # one line: within a pipe's buffer
    with suppress(OSError):
        child.stdin.close()
    return child


class Progress:
    """How far a client has moved one local file, as /proc shows it (Linux).

    A ``put``: the position of the client's descriptor on the file. The client reads it
    in order and at most its request window (128 x 32 KiB) ahead of the server's replies,
    so the position stops within 4 MiB once the server stops answering. A ``get``: the
    size of the file it writes. Neither counts keepalives: the ``ssh`` child answers
    those, which is how a dead SFTP process looked alive.
    """

    def __init__(self, pid: int, command: str, local: Path) -> None:
        self.pid = pid
        self.command = command
        self.local = local
        self._identity: tuple[int, int] | None = None

    def sample(self) -> int | None:
        """Bytes moved so far; None while the client has not opened the file (its SFTP
        session is not up yet)."""
        fd = self._descriptor()
        if fd is None:
            return None
        if self.command == "get":
            try:
                return os.stat(self.local).st_size
            except OSError:
                return None
        return _position(self.pid, fd)

    def _descriptor(self) -> str | None:
        """The client's descriptor on the local file, found by device and inode."""
        folder = f"/proc/{self.pid}/fd"
        try:
            if self._identity is None:
                st = os.stat(self.local)
                self._identity = (st.st_dev, st.st_ino)
            names = os.listdir(folder)
        except OSError:
            return None
        for name in names:
            with suppress(OSError):
                st = os.stat(f"{folder}/{name}")
                if (st.st_dev, st.st_ino) == self._identity:
                    return name
        return None


def _position(pid: int, fd: str) -> int | None:
    """The file position of descriptor ``fd`` of process ``pid``."""
    with suppress(OSError, ValueError), open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("pos:"):
                return int(line.split()[1])
    return None


def _stalled(
    child: subprocess.Popen[bytes],
    progress: Progress,
    t: Timeouts,
    watch: Callable[[int], None] | None = None,
) -> str | None:
    """Wait for the client while its file moves. None once it has exited; what went wrong
    (it still runs) after ``t.operation`` seconds without progress, or after the login's
    timeouts plus that before the file is opened at all."""
    limit, login = t.operation, t.connect + t.banner + t.auth
    seen: int | None = None
    last = time.monotonic()
    while True:
        try:
            child.wait(timeout=min(1.0, limit / 10))
            return None
        except subprocess.TimeoutExpired:
            pass
        now, value = time.monotonic(), progress.sample()
        if value is not None and value != seen:
            seen, last = value, now
            reached(value)  # (for a person waiting on the file)
            if watch is not None:
                watch(value)
        if not WATCHABLE:
            continue
        if seen is None and now - last >= login + limit:
            return f"no SFTP session within {login + limit:g} s; the server may not answer"
        if seen is not None and now - last >= limit:
            return f"no progress for {limit:g} s; the server's SFTP process may have stopped"


def _end(child: subprocess.Popen[bytes]) -> None:
    """End a client still running (SIGTERM to its group, SIGKILL after
    :data:`END_GRACE`), reap it and forget it."""
    try:
        if child.poll() is None:
            _signal_group(child.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                child.wait(timeout=END_GRACE)
            _signal_group(child.pid, signal.SIGKILL)
            child.wait()
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.pop(child.pid, None)


def end_children() -> list[int]:
    """End every OpenSSH client still running, with its ``ssh``: SIGTERM to each one's
    process group, SIGKILL to whatever is left after :data:`END_GRACE` seconds. For an
    exit that cannot wait for the transfers (a second stop signal), so that nothing goes
    on writing under a hidden name once xchange has gone. Safe in a signal handler;
    returns the clients' pids."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN.values())
    for child in children:
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + END_GRACE
    for child in children:
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        _signal_group(child.pid, signal.SIGKILL)
    return [child.pid for child in children]


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


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
