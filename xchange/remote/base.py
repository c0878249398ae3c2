"""The endpoint protocol: what xchange needs from a folder, local or on an SFTP server."""

from __future__ import annotations

import builtins
import fnmatch
import io
import posixpath
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from xchange.errors import RemoteError
from xchange.names import check_plain_name


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file in an endpoint's folder (``name`` is relative to that folder); ``inode`` is
    known for local folders (0 elsewhere)."""

    name: str
    size: int
    mtime_ns: int
    inode: int = field(default=0, compare=False)

    def same_file(self, other: FileInfo) -> bool:
        """Whether ``other`` (a later look at the same name) is still this file: the same
        size and time, and the same inode where both know it."""
        return (
            self.size == other.size
            and self.mtime_ns == other.mtime_ns
            and (not self.inode or not other.inode or self.inode == other.inode)
        )


#: The digests a server may compute for xchange, strongest first (all are also computed
#: here while the bytes are sent, to compare).
HASHES = ("sha512", "sha256", "sha1", "md5")


@dataclass(frozen=True, slots=True)
class Verify:
    """How a target checks each delivered file under its temporary name, before the
    rename (its ``verify`` and ``readback_max``)."""

    how: str = "size"
    readback_max: int = 16 << 20


@dataclass(frozen=True, slots=True)
class Check:
    """How one file is verified: by its ``size``; by a digest the ``server`` computes of
    the temporary file (``algorithm``); or ``readback`` (read back, sha256)."""

    way: str
    algorithm: str = ""

    def describe(self) -> str:
        if self.way == "server":
            return f"{self.algorithm} computed by the server"
        if self.way == "readback":
            return "read back, sha256"
        return "size"


SIZE_ONLY = Check("size")


def check_for(verify: Verify | None, size: int, server_hashes: Sequence[str]) -> Check:
    """How a file of ``size`` bytes is verified on a target that computes
    ``server_hashes`` itself (checked, strongest first): "hash" uses the server's digest,
    else reads the file back; "readback" reads it back. An empty file is verified by its
    size (there is nothing else to compare).

    Raises:
        CannotVerify: the file would have to be read back and is larger than
            ``readback_max``.
    """
    if verify is None or verify.how == "size" or size == 0:
        return SIZE_ONLY
    if verify.how == "hash" and server_hashes:
        return Check("server", server_hashes[0])
    if size > verify.readback_max:
        from xchange.errors import CannotVerify

        offered = (
            "the server offers no trustworthy digest, so it would be read back, but "
            if verify.how == "hash"
            else ""
        )
        raise CannotVerify(
            f"verify = {verify.how!r}: {offered}the file is {size:,} bytes, more than "
            f"readback_max ({verify.readback_max:,} bytes): not sent. Raise readback_max "
            "or choose another verify for this target"
        )
    return Check("readback", "sha256")


def mismatch(where: str, name: str, check: Check, sent: str, found: str) -> RemoteError:
    """The error of a temporary file whose digest is not the one of the bytes sent."""
    from xchange.errors import VerifyFailed

    how = "the server computes" if check.way == "server" else "read back"
    return VerifyFailed(
        f"{where}: {name}: the file on the target is not the one sent: {check.algorithm} "
        f"sent {sent}, {how} {found}; removed, not renamed"
    )


@dataclass(frozen=True, slots=True)
class SmallPut:
    """One small file for :meth:`Remote.put_many`, delivered as ``put_atomic`` would."""

    name: str
    data: bytes
    temp_name: str
    overwrite: bool
    #: The mode the file gets before its rename (None: the server's default).
    mode: int | None = None
    #: How the file is checked before its rename (None: its size).
    verify: Verify | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, as it declares it (an SFTP endpoint learns it from its
    server). What xchange relies on is checked against it, never assumed: a backend whose
    delivery is not an atomic rename cannot be a target without saying so."""

    #: A delivered file appears under its name whole (written under a hidden name, then
    #: renamed or linked into place).
    atomic_rename: bool
    #: A plain rename refuses a taken name (True) or replaces it (False: names are then
    #: checked right before each rename).
    rename_refuses: bool
    #: An existing name can be replaced in one step (POSIX rename semantics).
    posix_rename: bool
    #: Hard links can be made (a name taken only if it is free, in one step).
    hard_links: bool
    #: Files keep the mode they are given.
    keeps_modes: bool
    #: Digests the server computes of a file itself, strongest first: announced by the
    #: server and found right on a file of known content (none: files are read back).
    server_hashes: tuple[str, ...] = ()


@runtime_checkable
class Remote(Protocol):
    """A folder that files are listed in, read from and delivered to.

    Every method raises a :class:`xchange.errors.RemoteError` subclass on failure:
    ``RemoteNotFound`` for a missing path, ``RemotePermissionDenied`` when denied,
    ``ConnectionLost``/``RemoteTimeout``/``RemoteUnavailable`` for transient trouble.
    """

    label: str

    def connect(self) -> None:
        """Open the connection now, so that the next call does not wait for it (nothing
        to do for a local folder)."""
        ...

    def capabilities(self) -> Capabilities:
        """What this endpoint can do (an SFTP endpoint connects to learn it)."""
        ...

    def list(
        self,
        *,
        recursive: bool = False,
        skip_dirs: tuple[str, ...] = (),
        keep: Callable[[str, int, int], bool] | None = None,
    ) -> list[FileInfo]:
        """Regular files in the folder (and its sub-folders but ``skip_dirs`` if
        ``recursive``), oldest first; never symlinks, never xchange's temporary files.
        With ``keep``, only the files it keeps (given name, size and mtime_ns, as the
        listing comes) are returned: the others cost no object and no further work."""
        ...

    def download(self, name: str, dest: BinaryIO) -> int:
        """Copy a file's content into ``dest``; return the number of bytes."""
        ...

    def local_copy(self, name: str, scratch: Path) -> AbstractContextManager[Path]:
        """A local path holding the file's content while the context lasts: the file
        itself for a local folder, a download into ``scratch`` otherwise."""
        ...

    def stat(self, name: str) -> FileInfo | None:
        """The file's size and time, or None if it does not exist."""
        ...

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
        sha256: str | None = None,
    ) -> FileInfo:
        """Write ``size`` bytes from ``src`` under ``temp_name``, then rename to ``name``.

        A reader never sees a partial file under ``name``. With ``overwrite=False``
        an existing ``name`` raises ``TargetExists`` and is left untouched (on servers
        whose rename replaces files, the name is checked right before the rename). The
        file gets ``mode`` before the rename (None: the endpoint's default). The temporary
        file is removed on failure. The size is checked after the rename.
        ``before_rename`` is called once the bytes are in, right before the rename: what it
        raises stops the delivery (the temporary file removed) and is raised again.
        With ``verify``, the temporary file is then checked as :func:`check_for` says
        (``VerifyFailed`` when it is not what was sent: removed, not renamed;
        ``CannotVerify`` before anything is sent).
        With the content's ``sha256`` (the same ``temp_name`` on every try), a big
        upload cut short leaves its temporary file for the next try to resume, where
        it is proven to be this content's start (docs/resume.md); other failures, and
        uploads without it, remove the temporary file.
        """
        ...

    def get_many(self, files: Sequence[FileInfo]) -> builtins.list[bytes | RemoteError]:
        """Read several small files whole, overlapping their round trips where the endpoint
        can. Returns one entry per file: its bytes, or the error that stopped it
        (``RemoteNotFound`` if it is gone; another error if it is not the size listed).
        A lost connection is the error of every file not read yet.

        Raises:
            RemoteError: before any file was read (no session).
        """
        ...

    def put_many(self, puts: Sequence[SmallPut]) -> builtins.list[RemoteError | None]:
        """Deliver several small files, each as ``put_atomic`` does (temporary name,
        verified as its ``verify`` says, rename, size checked), overlapping their round
        trips where the endpoint can.

        Returns one entry per file: None once it is in place under its name, else the
        error that stopped it (its temporary file removed where possible). A file that
        failed is left for the caller to send again one at a time, where a refused name
        is told apart from other trouble; a connection lost midway is the error of every
        file not known to be in place.

        Raises:
            RemoteError: before any file was sent (no session, no target folder).
        """
        ...

    def move_many(
        self, names: Sequence[str], folder: str, *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[str | RemoteError]:
        """Move several files into a sub-folder (created if missing), overlapping their
        round trips where the endpoint can. One entry per file: its new relative path, or
        the error that stopped it (a name already taken in the folder is an error here:
        ``move`` finds a free one). With ``expect``, a file that is not that file any more
        is left where it is (``SourceChanged``).

        Raises:
            RemoteError: before any file was moved (no session, no folder).
        """
        ...

    def remove_many(
        self, names: Sequence[str], *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[RemoteError | None]:
        """Delete several files, overlapping their round trips where the endpoint can; a
        missing file is not an error. One entry per file: None, or what stopped it (with
        ``expect``, ``SourceChanged`` for a file that is not that file any more).

        Raises:
            RemoteError: before any file was deleted (no session).
        """
        ...

    def move(self, name: str, folder: str, *, expect: FileInfo | None = None) -> str:
        """Move a file into a sub-folder (created if missing); return its new relative path.

        With ``expect`` (the file as it was taken), a file that is not that file any more
        (rewritten, replaced, grown), checked right before and right after the move, is
        left where it is: ``SourceChanged``.
        """
        ...

    def remove(self, name: str, *, expect: FileInfo | None = None) -> None:
        """Delete a file; a missing file is not an error. With ``expect``, as ``move``."""
        ...

    def claim_drop(self, owner: DropOwner, ttl: float) -> DropOwner | None:
        """Mark this folder as the drop of ``owner`` (one xchange journal) for as long as it
        runs: None once it is, else the other owner whose mark is fresh (``ttl`` seconds;
        an older one is taken over). Called again at every look, as a heartbeat. A folder
        that cannot be marked (read-only) is not guarded: None."""
        ...

    def release_drop(self, owner: DropOwner) -> None:
        """Take ``owner``'s mark off the folder (nothing if it is not there)."""
        ...

    def close(self) -> None:
        """Release connections; the remote reconnects if used again."""
        ...


#: The hidden file that marks a drop folder as one journal's while it runs.
DROP_MARK = ".xchange-drop"
#: The suffix of a shared journal's id in a drop mark.
SHARED = "+shared"


@dataclass(frozen=True, slots=True)
class DropOwner:
    """Who takes files from a drop folder: one journal, on one host, in one process."""

    journal_id: str
    host: str
    pid: int
    #: Seconds since the epoch of the last look (the heartbeat).
    at: float = 0.0

    def text(self) -> str:
        return f"{self.journal_id} {self.host} {self.pid} {self.at:.0f}\n"

    @classmethod
    def parse(cls, text: str) -> DropOwner | None:
        parts = text.split()
        try:
            return cls(parts[0], parts[1], int(parts[2]), float(parts[3]))
        except (IndexError, ValueError):
            return None

    def describe(self) -> str:
        return f"journal {self.journal_id} (pid {self.pid} on {self.host})"

    def shares_with(self, other: DropOwner) -> bool:
        """Whether both are daemons of one shared journal (which may take files from one
        drop folder together: their claims keep them apart)."""
        return self.journal_id == other.journal_id and self.journal_id.endswith(SHARED)


def matches(name: str, pattern: str) -> bool:
    """Shell-style match of a file name, case-sensitive on every platform."""
    return fnmatch.fnmatchcase(name, pattern)


def is_temporary(name: str) -> bool:
    """Names xchange itself writes while delivering (never picked up as input)."""
    return name.startswith(".") or name.endswith(".xchange-part")


def hidden_name(name: str, token: str, suffix: str) -> str:
    """``.NAME.TOKEN.SUFFIX``, a hidden name beside ``name``, within 255 bytes whatever
    the length of ``name`` (a long one is cut on a character boundary, with a hash of
    the whole so that two long names never meet)."""
    folder, base = posixpath.split(name)
    tail = f".{token}.{suffix}"
    room = 255 - 1 - len(tail.encode())
    if len(base.encode()) > room:
        import hashlib

        digest = hashlib.sha256(base.encode()).hexdigest()[:12]
        cut = base.encode()[: room - 13].decode("utf-8", "ignore")
        base = f"{cut}~{digest}"
    return posixpath.join(folder, f".{base}{tail}")


def temp_name_for(name: str, token: str) -> str:
    """The temporary name a delivery of ``name`` uses: hidden, within 255 bytes, and the
    same on every retry of the same journal (``token`` carries the journal's id)."""
    return hidden_name(check_plain_name(name), token, "xchange-part")


def safe_subfolder(folder: str) -> str:
    """A relative sub-folder path that stays inside its endpoint folder."""
    norm = posixpath.normpath(folder.replace("\\", "/"))
    # (after normpath a ".." can only lead; "..name" is a name like any other)
    if norm.startswith("/") or norm.split("/", 1)[0] == ".." or "\x00" in norm:
        from xchange.errors import UnsafeName

        raise UnsafeName(f"folder {folder!r} would leave the endpoint folder")
    return norm


def get_each(remote: Remote, files: Sequence[FileInfo]) -> builtins.list[bytes | RemoteError]:
    """``get_many`` one file after another (backends without round trips to overlap)."""
    results: builtins.list[bytes | RemoteError] = []
    for info in files:
        buffer = io.BytesIO()
        try:
            remote.download(info.name, buffer)
        except RemoteError as exc:
            results.append(exc)
        else:
            results.append(buffer.getvalue())
    return results


def put_each(remote: Remote, puts: Sequence[SmallPut]) -> builtins.list[RemoteError | None]:
    """``put_many`` one ``put_atomic`` after another."""
    results: builtins.list[RemoteError | None] = []
    for put in puts:
        try:
            remote.put_atomic(
                put.name,
                io.BytesIO(put.data),
                len(put.data),
                temp_name=put.temp_name,
                overwrite=put.overwrite,
                mode=put.mode,
                verify=put.verify,
            )
        except RemoteError as exc:
            results.append(exc)
        else:
            results.append(None)
    return results


def remove_each(
    remote: Remote, names: Sequence[str], expect: Sequence[FileInfo] | None
) -> builtins.list[RemoteError | None]:
    """``remove_many`` one ``remove`` after another."""
    results: builtins.list[RemoteError | None] = []
    for i, name in enumerate(names):
        try:
            remote.remove(name, expect=expect[i] if expect else None)
        except RemoteError as exc:
            results.append(exc)
        else:
            results.append(None)
    return results


class NullWriter:
    """A writer that only counts and hashes (to fingerprint a remote file)."""

    def __init__(self) -> None:
        import hashlib

        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return len(data)


@dataclass(frozen=True, slots=True)
class Selector:
    """Which files of a folder a route takes."""

    patterns: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    # The patterns as one expression each way (a listing asks once per file).
    _take: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _skip: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_take", _either(self.patterns))
        object.__setattr__(self, "_skip", _either(self.exclude))

    def wants(self, name: str) -> bool:
        """Whether the file's name or its base name matches a pattern and no exclusion
        (shell-style, case-sensitive, as :func:`matches`)."""
        take, skip = self._take, self._skip
        if take is None:
            return False
        nested = "/" in name
        base = name.rpartition("/")[2] if nested else name
        if take.match(base) is None and (not nested or take.match(name) is None):
            return False
        return skip is None or (
            skip.match(base) is None and (not nested or skip.match(name) is None)
        )


def _either(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One expression matching what any of the shell-style patterns matches."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
