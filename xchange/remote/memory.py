"""A folder kept in memory: the Remote contract without a disk or a server.

For fast tests of everything above the remotes (and as the smallest example of a
backend). A :class:`MemoryStore` plays the server: several :class:`MemoryRemote`
instances (one per worker thread, as sessions are) see the same files. It keeps what the
contract asks for: hidden temporary names renamed into place, a taken name never replaced
without overwrite, modes, archive folders, files that change between a listing and a
move told apart (each write is a new file, with its own inode).
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xchange.errors import RemoteError, RemoteNotFound, SourceChanged, TargetExists
from xchange.private import private_folder
from xchange.remote.base import (
    Capabilities,
    DropOwner,
    FileInfo,
    SmallPut,
    Verify,
    check_for,
    get_each,
    is_temporary,
    mismatch,
    put_each,
    remove_each,
    safe_subfolder,
)

#: A store's rename is one dictionary step under its lock: it replaces a name in one step,
#: and put_atomic checks a taken name under the same lock.
MEMORY_CAPABILITIES = Capabilities(
    atomic_rename=True, rename_refuses=False, posix_rename=True, hard_links=False, keeps_modes=True
)


@dataclass(frozen=True, slots=True)
class Stored:
    """One file in a store: its bytes, time, mode and identity (a new one per write)."""

    data: bytes
    mtime_ns: int
    mode: int
    inode: int


class MemoryStore:
    """The files of an in-memory folder tree, shared by the remotes that show it."""

    def __init__(self) -> None:
        self.files: dict[str, Stored] = {}
        self.lock = threading.RLock()
        self._inodes = itertools.count(1)
        self._last_ns = 0
        #: The drop mark and when it was last renewed (monotonic seconds).
        self.drop: tuple[DropOwner, float] | None = None

    def write(self, path: str, data: bytes, mode: int = 0o644) -> Stored:
        """Store ``data`` under ``path`` (a new file: a new inode and a later time)."""
        with self.lock:
            now = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = now
            stored = Stored(bytes(data), now, mode, next(self._inodes))
            self.files[path] = stored
            return stored

    def folder(self, path: str) -> dict[str, bytes]:
        """The files directly in a folder (hidden ones included), by name."""
        prefix = f"{path}/" if path else ""
        with self.lock:
            return {
                p[len(prefix) :]: f.data
                for p, f in self.files.items()
                if p.startswith(prefix) and "/" not in p[len(prefix) :]
            }


class MemoryRemote:
    """A folder of a :class:`MemoryStore` (its whole tree)."""

    def __init__(self, label: str, store: MemoryStore) -> None:
        self.label = label
        self.store = store

    def _get(self, name: str) -> Stored:
        found = self.store.files.get(safe_subfolder(name))
        if found is None:
            raise RemoteNotFound(f"{self.label}: {name}: no such file or folder")
        return found

    def connect(self) -> None:
        return None

    def capabilities(self) -> Capabilities:
        return MEMORY_CAPABILITIES

    def list(
        self,
        *,
        recursive: bool = False,
        skip_dirs: tuple[str, ...] = (),
        keep: Callable[[str, int, int], bool] | None = None,
    ) -> list[FileInfo]:
        out = []
        with self.store.lock:
            for path, f in self.store.files.items():
                parts = path.split("/")
                if any(is_temporary(p) for p in parts):
                    continue
                if len(parts) > 1 and (not recursive or parts[0] in skip_dirs):
                    continue
                if keep is not None and not keep(path, len(f.data), f.mtime_ns):
                    continue
                out.append(FileInfo(path, len(f.data), f.mtime_ns, f.inode))
        return sorted(out, key=lambda f: (f.mtime_ns, f.name))

    def download(self, name: str, dest: BinaryIO) -> int:
        with self.store.lock:
            data = self._get(name).data
        dest.write(data)
        return len(data)

    @contextmanager
    def local_copy(self, name: str, scratch: Path) -> Iterator[Path]:
        private_folder(scratch)
        fd, path = tempfile.mkstemp(dir=scratch, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as fh:
                self.download(name, fh)
            yield Path(path)
        finally:
            Path(path).unlink(missing_ok=True)

    def stat(self, name: str) -> FileInfo | None:
        with self.store.lock:
            f = self.store.files.get(safe_subfolder(name))
            return None if f is None else FileInfo(name, len(f.data), f.mtime_ns, f.inode)

    def put_atomic(
        self,
        name: str,
        src: BinaryIO,
        size: int,
        *,
        temp_name: str,
        overwrite: bool,
        mode: int | None = None,
        before_rename: Callable[[], None] | None = None,
        verify: Verify | None = None,
        sha256: str | None = None,  # (nothing to resume: a copy is never cut short)
    ) -> FileInfo:
        final, temp = safe_subfolder(name), safe_subfolder(temp_name)
        check = check_for(verify, size, ())
        data = src.read()
        if before_rename is not None:
            before_rename()
        with self.store.lock:
            if not overwrite and final in self.store.files:
                raise TargetExists(f"{self.label}: {name} already exists")
            self.store.write(temp, data, 0o644 if mode is None else mode)
            if check.way != "size":
                # (Read back: what the store holds under the temporary name.)
                sent = hashlib.sha256(data).hexdigest()
                found = hashlib.sha256(self.store.files[temp].data).hexdigest()
                if found != sent:
                    del self.store.files[temp]
                    raise mismatch(self.label, name, check, sent, found)
            # The rename: the whole file appears under its name at once.
            stored = self.store.files.pop(temp)
            self.store.files[final] = stored
        if len(stored.data) != size:
            raise RemoteError(f"{self.label}: {name}: wrote {size} bytes but got {len(data)}")
        return FileInfo(name, size, stored.mtime_ns)

    def get_many(self, files: Sequence[FileInfo]) -> builtins.list[bytes | RemoteError]:
        return get_each(self, files)

    def put_many(self, puts: Sequence[SmallPut]) -> builtins.list[RemoteError | None]:
        return put_each(self, puts)

    def _still(self, name: str, expect: FileInfo | None) -> Stored:
        f = self._get(name)
        now = FileInfo(name, len(f.data), f.mtime_ns, f.inode)
        if expect is not None and not expect.same_file(now):
            raise SourceChanged(
                f"{self.label}: {name}: changed since it was taken; left in place, to be "
                "taken as a new file"
            )
        return f

    def move_many(
        self, names: Sequence[str], folder: str, *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[str | RemoteError]:
        sub = safe_subfolder(folder)
        results: builtins.list[str | RemoteError] = []
        for i, name in enumerate(names):
            dest = posixpath.join(sub, posixpath.basename(name))
            with self.store.lock:
                try:
                    if dest in self.store.files:
                        raise TargetExists(f"{self.label}: {dest} already exists")
                    f = self._still(name, expect[i] if expect else None)
                except RemoteError as exc:
                    results.append(exc)
                    continue
                self.store.files[dest] = f
                del self.store.files[safe_subfolder(name)]
                results.append(dest)
        return results

    def remove_many(
        self, names: Sequence[str], *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[RemoteError | None]:
        return remove_each(self, names, expect)

    def move(self, name: str, folder: str, *, expect: FileInfo | None = None) -> str:
        sub = safe_subfolder(folder)
        with self.store.lock:
            f = self._still(name, expect)
            base = posixpath.join(sub, posixpath.basename(name))
            dest, n = base, 1
            while dest in self.store.files:  # never replace an archived file
                dest, n = f"{base}.{n}", n + 1
            self.store.files[dest] = f
            del self.store.files[safe_subfolder(name)]
            return dest

    def remove(self, name: str, *, expect: FileInfo | None = None) -> None:
        with self.store.lock:
            if safe_subfolder(name) not in self.store.files:
                return
            self._still(name, expect)
            del self.store.files[safe_subfolder(name)]

    def claim_drop(self, owner: DropOwner, ttl: float) -> DropOwner | None:
        with self.store.lock:
            held = self.store.drop
            now = time.monotonic()
            if held is not None and held[0].journal_id != owner.journal_id and now - held[1] < ttl:
                return held[0]
            self.store.drop = (owner, now)
            return None

    def release_drop(self, owner: DropOwner) -> None:
        with self.store.lock:
            if self.store.drop is not None and self.store.drop[0].journal_id == owner.journal_id:
                self.store.drop = None

    def close(self) -> None:
        return None


__all__ = ["MEMORY_CAPABILITIES", "MemoryRemote", "MemoryStore", "Stored"]
