"""A folder on this machine."""

from __future__ import annotations

import builtins
import errno
import fcntl
import hashlib
import os
import posixpath
import stat as stat_mod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from xchange.config import LocalEndpoint
from xchange.errors import (
    NameRefused,
    RemoteError,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteUnavailable,
    SourceChanged,
    TargetExists,
)
from xchange.faults import checkpoint
from xchange.progress import advance
from xchange.remote.base import (
    DROP_MARK,
    Capabilities,
    DropOwner,
    FileInfo,
    SmallPut,
    Verify,
    check_for,
    get_each,
    hidden_name,
    is_temporary,
    mismatch,
    put_each,
    remove_each,
    safe_subfolder,
)

CHUNK = 1 << 20
LOCAL_CAPABILITIES = Capabilities(
    atomic_rename=True, rename_refuses=False, posix_rename=True, hard_links=True, keeps_modes=True
)


@contextmanager
def _os_errors(label: str, what: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        raise RemoteNotFound(f"{label}: {what}: no such file or folder") from exc
    except PermissionError as exc:
        raise RemotePermissionDenied(f"{label}: {what}: permission denied") from exc
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
            raise NameRefused(
                f"{label}: {what}: the name cannot be written: {exc.strerror}"
            ) from exc
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY):
            raise RemoteUnavailable(f"{label}: {what}: {exc.strerror}") from exc
        raise RemoteError(f"{label}: {what}: {exc.strerror or exc}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalRemote:
    """A local folder. Deliveries are written to a hidden name, fsynced, then renamed."""

    @classmethod
    def from_config(cls, label: str, cfg: LocalEndpoint) -> LocalRemote:
        """The remote for a configured endpoint of this kind."""
        return cls(label, cfg.path)

    @staticmethod
    def sessions_opened() -> dict[str, int]:
        """Sessions opened, by endpoint: none (a local folder has no session)."""
        return {}

    def __init__(self, label: str, root: Path) -> None:
        self.label = label
        self.root = root
        self._drop_fd: int | None = None

    def _path(self, name: str) -> Path:
        return self.root / safe_subfolder(name)

    def connect(self) -> None:
        pass

    def capabilities(self) -> Capabilities:
        # link() takes a free name in one step, rename() replaces one in one step.
        return LOCAL_CAPABILITIES

    def list(
        self,
        *,
        recursive: bool = False,
        skip_dirs: tuple[str, ...] = (),
        keep: Callable[[str, int, int], bool] | None = None,
    ) -> list[FileInfo]:
        out: list[FileInfo] = []
        with _os_errors(self.label, str(self.root)):
            self._scan(self.root, "", recursive, skip_dirs, out, keep)
        return sorted(out, key=lambda f: (f.mtime_ns, f.name))

    def _scan(
        self,
        folder: Path,
        prefix: str,
        recursive: bool,
        skip_dirs: tuple[str, ...],
        out: builtins.list[FileInfo],
        keep: Callable[[str, int, int], bool] | None,
    ) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if is_temporary(entry.name):
                    continue
                name = prefix + entry.name
                try:
                    # Symlinks are not followed: a link in a drop folder may point anywhere.
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if keep is None or keep(name, st.st_size, st.st_mtime_ns):
                            out.append(FileInfo(name, st.st_size, st.st_mtime_ns, st.st_ino))
                    elif (
                        recursive
                        and entry.is_dir(follow_symlinks=False)
                        and not (not prefix and entry.name in skip_dirs)
                    ):
                        self._scan(Path(entry.path), name + "/", recursive, skip_dirs, out, keep)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # removed while the folder was listed: not there any more

    def download(self, name: str, dest: BinaryIO) -> int:
        with _os_errors(self.label, name):
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                size = 0
                while chunk := fh.read(CHUNK):
                    dest.write(chunk)
                    size += len(chunk)
                return size

    @contextmanager
    def local_copy(self, name: str, scratch: Path) -> Iterator[Path]:
        path = self._path(name)
        with _os_errors(self.label, name):
            if path.is_symlink() or not path.is_file():
                raise FileNotFoundError(name)
        yield path

    def stat(self, name: str) -> FileInfo | None:
        """The file's size and time; None if it is missing or not a regular file (a symlink
        or a folder is never taken for one)."""
        try:
            st = self._path(name).lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return FileInfo(name, st.st_size, st.st_mtime_ns, st.st_ino)

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
        final, temp = self._path(name), self._path(temp_name)
        check = check_for(verify, size, ())
        with _os_errors(self.label, name):
            if not overwrite and final.exists():
                raise TargetExists(f"{self.label}: {name} already exists")
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                sent = hashlib.sha256()
                with open(temp, "wb") as fh:
                    while chunk := src.read(CHUNK):
                        if check.way != "size":
                            sent.update(chunk)
                        fh.write(chunk)
                        advance(len(chunk))  # (a person waiting on a big copy sees it move)
                    fh.flush()
                    if mode is not None:
                        os.fchmod(fh.fileno(), mode)
                    os.fsync(fh.fileno())
                checkpoint("before-rename")
                if before_rename is not None:
                    before_rename()
                if check.way != "size":
                    with open(temp, "rb") as fh:
                        found = hashlib.file_digest(fh, "sha256").hexdigest()
                    if found != sent.hexdigest():
                        raise mismatch(self.label, name, check, sent.hexdigest(), found)
                if overwrite:
                    os.replace(temp, final)
                else:
                    # link() refuses an existing name: no window where a file is overwritten.
                    try:
                        os.link(temp, final)
                    except FileExistsError:
                        raise TargetExists(f"{self.label}: {name} already exists") from None
                    os.unlink(temp)
                _fsync_dir(final.parent)
            finally:
                if temp.exists():
                    temp.unlink()
            st = final.stat()
        if st.st_size != size:
            raise RemoteUnavailable(
                f"{self.label}: {name}: wrote {size} bytes but the file has {st.st_size}"
            )
        return FileInfo(name, st.st_size, st.st_mtime_ns)

    def get_many(self, files: Sequence[FileInfo]) -> builtins.list[bytes | RemoteError]:
        return get_each(self, files)

    def move_many(
        self, names: Sequence[str], folder: str, *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[str | RemoteError]:
        sub = safe_subfolder(folder)
        dest_dir = os.path.join(self.root, sub)
        with _os_errors(self.label, sub):
            os.makedirs(dest_dir, exist_ok=True)
        results: builtins.list[str | RemoteError] = []
        for i, name in enumerate(names):
            base = posixpath.basename(name)
            dest = Path(dest_dir) / base
            try:
                if os.path.lexists(dest):
                    raise FileExistsError(dest)  # ``move`` finds a free name for it
                self._move_checked(name, dest, expect[i] if expect else None)
            except FileExistsError:
                results.append(TargetExists(f"{self.label}: {sub}/{base} already exists"))
            except RemoteError as exc:
                results.append(exc)
            else:
                results.append(posixpath.join(sub, base))
        return results

    def remove_many(
        self, names: Sequence[str], *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[RemoteError | None]:
        return remove_each(self, names, expect)

    def put_many(self, puts: Sequence[SmallPut]) -> builtins.list[RemoteError | None]:
        return put_each(self, puts)

    def move(self, name: str, folder: str, *, expect: FileInfo | None = None) -> str:
        sub = safe_subfolder(folder)
        with _os_errors(self.label, name):
            dest_dir = self.root / sub
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / Path(name).name
            stem, n = dest.name, 1
            while dest.exists():  # never overwrite an archived file of the same name
                dest = dest_dir / f"{stem}.{n}"
                n += 1
        self._move_checked(name, dest, expect)
        return str(dest.relative_to(self.root))

    def _move_checked(self, name: str, dest: Path, expect: FileInfo | None) -> None:
        """Rename ``name`` to ``dest``; with ``expect``, only if it is still that file,
        looked at right before the rename and, by inode, right after it (a file replaced
        in between goes back under its name)."""
        src = self._path(name)
        with _os_errors(self.label, name):
            if expect is not None:
                self._still(name, src, expect)
            before = src.lstat().st_ino
            os.rename(src, dest)
            if expect is not None and dest.lstat().st_ino != (expect.inode or before):
                self._put_back(dest, src, name)

    def _still(self, name: str, path: Path, expect: FileInfo) -> None:
        st = path.lstat()
        now = FileInfo(name, st.st_size, st.st_mtime_ns, st.st_ino)
        if not stat_mod.S_ISREG(st.st_mode) or not expect.same_file(now):
            raise SourceChanged(
                f"{self.label}: {name}: changed since it was taken ({expect.size} -> "
                f"{st.st_size} bytes); left in place, to be taken as a new file"
            )

    def _put_back(self, moved: Path, original: Path, name: str) -> None:
        """A file that turned out not to be the one taken goes back under its name (never
        over a newer one: link refuses an existing name)."""
        with suppress(FileExistsError):
            os.link(moved, original)
            os.unlink(moved)
        raise SourceChanged(
            f"{self.label}: {name}: replaced while it was being moved; put back, to be "
            "taken as a new file"
        )

    def remove(self, name: str, *, expect: FileInfo | None = None) -> None:
        path = self._path(name)
        if expect is None:
            with _os_errors(self.label, name), suppress(FileNotFoundError):
                path.unlink()
            return
        # Moved aside first, then judged by what was moved: a file written under the name
        # in between is never the one deleted.
        aside = self._path(hidden_name(name, str(os.getpid()), "xchange-del"))
        with _os_errors(self.label, name):
            try:
                self._still(name, path, expect)
                os.rename(path, aside)
            except FileNotFoundError:
                return
            if aside.lstat().st_ino != (expect.inode or aside.lstat().st_ino):
                self._put_back(aside, path, name)
            aside.unlink()

    def claim_drop(self, owner: DropOwner, ttl: float) -> DropOwner | None:
        """A lock on ``.xchange-drop`` in the folder, held while this process runs (the
        kernel drops it if the process dies)."""
        if self._drop_fd is not None:
            return None
        path = self.root / DROP_MARK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            return None  # a folder that cannot be written is not guarded
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = DropOwner.parse(os.pread(fd, 256, 0).decode(errors="replace"))
            os.close(fd)
            if holder is not None and holder.shares_with(owner):
                return None  # another daemon of the same shared journal
            return holder or DropOwner("unknown", "unknown", 0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.text().encode(), 0)
        self._drop_fd = fd
        return None

    def release_drop(self, owner: DropOwner) -> None:
        if self._drop_fd is not None:
            with suppress(OSError):
                os.ftruncate(self._drop_fd, 0)
            fcntl.flock(self._drop_fd, fcntl.LOCK_UN)
            os.close(self._drop_fd)
            self._drop_fd = None

    def close(self) -> None:
        return None
