"""One run at a time per configuration: an advisory lock next to the journal."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from xchange.errors import JournalError, LockHeld
from xchange.private import private_folder


class RunLock:
    """A non-blocking exclusive ``flock``; the kernel releases it if the process dies."""

    def __init__(self, path: Path, role: str = "run") -> None:
        self.path = path
        #: What holds the lock ("daemon", "run"), written after the pid.
        self.role = role
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            private_folder(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(
                f"cannot take the run lock {self.path}: {exc.strerror or exc} (the journal's "
                "folder must be writable)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"another xchange run of this configuration is still active "
                f"(pid {holder}, lock {self.path}); nothing was touched"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.role}".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> tuple[int, str] | None:
        """The pid and role of the process holding the lock (None: no process holds it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, _, role = os.read(fd, 64).decode(errors="replace").strip().partition(" ")
                return (int(pid), role) if pid.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host may still run (one we may not signal: yes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
