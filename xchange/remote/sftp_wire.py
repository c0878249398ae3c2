"""The SFTP wire protocol for many files at once: requests written straight to a
session's channel, many files in flight, replies read as they come.

It knows nothing of connections or configuration: it is given a channel (anything with
``sendall`` and ``recv``) and a :class:`Place` (the resolved folder, a label for messages,
and what the server is known to do), and returns one result per file.
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import posixpath
import secrets
import struct
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from xchange.errors import (
    ConnectionLost,
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
    SIZE_ONLY,
    Capabilities,
    Check,
    FileInfo,
    SmallPut,
    hidden_name,
    is_temporary,
    mismatch,
    safe_subfolder,
)

#: SFTP's generic failure code (SSH_FX_FAILURE): all the protocol says of a full disk.
FX_FAILURE = 4


#: What a bare "Failure" from a server most often means, added to its message.
GENERIC_FAILURE = (
    "SFTP's generic failure: on an upload, most often the target's disk is full or a quota "
    "is reached"
)


def said_failure(text: str, code: int | None = None) -> str:
    """What a server's status says, and what a bare "Failure" most often means: OpenSSH and
    others answer a write to a full disk (or over a quota) with nothing more."""
    said = text or f"status {code}"
    bare = said.strip().lower()
    if code in (FX_FAILURE, None) and (bare.endswith("failure") or bare == "status 4"):
        said += f" ({GENERIC_FAILURE})"
    return said


class Channel(Protocol):
    """The session's channel: bytes out, bytes in."""

    def sendall(self, data: bytes) -> None: ...

    def recv(self, nbytes: int) -> bytes: ...


@dataclass
class ServerTraits:
    """What one SFTP server does differently, learned once per process."""

    #: The extensions its VERSION reply lists, once read (``hello``).
    extensions: dict[str, bytes] = field(default_factory=dict)
    hello: bool = False
    #: Whether a plain SFTP rename replaces an existing file (rclone, MySecureShell) or
    #: refuses it (OpenSSH, ProFTPD, gesftpserver); None until learned. A server whose
    #: answer could not be learned is treated as replacing (names are checked first).
    rename_overwrites: bool | None = None
    #: Whether it refused to set a file's mode (warned about once).
    mode_refused: bool = False
    #: Whether it accepts a mode but keeps its own (rclone): no mode is sent then.
    modes_ignored: bool = False
    #: The digests it computes of a file (``check-file``), announced and found right on
    #: a file of known content; learned when a target first asks for verify = "hash".
    hashes: tuple[str, ...] = ()
    hashes_learned: bool = False

    @property
    def posix_rename(self) -> bool:
        return "posix-rename@openssh.com" in self.extensions

    def describe(self) -> list[str]:
        """What an operator should know, one line each (for `check --remote`, `trust`)."""
        lines = ["extensions: " + (", ".join(sorted(self.extensions)) or "none")]
        if self.rename_overwrites:
            lines.append(
                "a plain rename replaces an existing file here: without overwrite, each name "
                "is checked right before its rename; a file the partner creates under that "
                "name in between (milliseconds) would be replaced"
            )
        elif self.rename_overwrites is False:
            lines.append("a plain rename refuses an existing name: names are never replaced")
        if not self.posix_rename:
            lines.append(
                "no posix-rename: overwriting moves the old file aside, renames the new one "
                "in, then deletes the old one (restored if the rename fails)"
            )
        if self.modes_ignored or self.mode_refused:
            lines.append("files keep the server's own mode: target.mode cannot be applied here")
        if self.hashes:
            lines.append(
                f'computes {self.hashes[0]} digests of files (check-file): verify = "hash" '
                "needs no read back"
            )
        elif self.hashes_learned:
            lines.append(
                'computes no digest xchange trusts: verify = "hash" reads files back (up to '
                "readback_max)"
            )
        return lines


@dataclass(frozen=True, slots=True)
class Place:
    """Where the files are: ``where`` names the endpoint in messages, ``root`` is its
    folder on the server; ``can`` what the server can do (its capabilities, read here
    and nowhere guessed; None for work that needs none of them and must not wait for
    them to be learned: listing, reading, removing, hashing, asking the free space)."""

    where: str
    root: str
    can: Capabilities | None = None

    def capabilities(self) -> Capabilities:
        """What the server can do (deliveries and moves need it)."""
        if self.can is None:
            raise ValueError(f"{self.where}: the server's capabilities are not learned yet")
        return self.can

    def path(self, name: str) -> str:
        """The server path of a name relative to the folder (never outside it)."""
        return posixpath.join(self.root, safe_subfolder(name))


def extension_pairs(data: bytes) -> dict[str, bytes]:
    pairs: dict[str, bytes] = {}
    pos = 0
    try:
        while pos < len(data):
            (n,) = _U32.unpack_from(data, pos)
            name = data[pos + 4 : pos + 4 + n].decode("utf-8", "replace")
            pos += 4 + n
            (n,) = _U32.unpack_from(data, pos)
            pairs[name] = data[pos + 4 : pos + 4 + n]
            pos += 4 + n
    except struct.error:
        pass  # a malformed tail: keep what was read
    return pairs


_INIT, _VERSION = 1, 2


def hello(channel: Channel, version: int = 3) -> dict[str, bytes]:
    """Open an SFTP session (version 3, or ``version``) on a fresh channel and return the
    extensions the server's VERSION reply lists (paramiko's client reads and drops them).

    Raises:
        EOFError: the server closed the channel.
        ValueError: the server did not answer with a VERSION.
    """
    channel.sendall(_U32.pack(5) + bytes([_INIT]) + _U32.pack(version))
    data = b""
    while len(data) < 4 or len(data) < 4 + _U32.unpack_from(data)[0]:
        more = channel.recv(1 << 16)
        if not more:
            raise EOFError("the server closed the SFTP channel")
        data += more
        if len(data) >= 4 and _U32.unpack_from(data)[0] > 1 << 20:
            raise ValueError("the VERSION reply is larger than 1 MiB")
    (length,) = _U32.unpack_from(data)
    if length < 5 or data[4] != _VERSION:
        raise ValueError(f"the server answered INIT with {bytes(data[4:9])!r}, not a VERSION")
    return extension_pairs(bytes(data[9 : 4 + length]))


def extension_names(pairs: dict[str, bytes]) -> set[str]:
    """The extensions a VERSION reply announces: its own pairs, and the names a version 5
    or 6 reply lists in its ``supported`` / ``supported2`` (draft-ietf-secsh-filexfer-13
    section 5.4: the fixed fields, then counted or trailing lists of names)."""
    names = set(pairs)
    with suppress(struct.error, UnicodeDecodeError):
        if "supported2" in pairs:
            data = pairs["supported2"]
            pos = 5 * 4 + 2 * 2
            for _list in range(2):  # attribute extensions, then extensions
                (count,) = _U32.unpack_from(data, pos)
                pos += 4
                for _ in range(count):
                    (n,) = _U32.unpack_from(data, pos)
                    if pos + 4 + n > len(data):
                        raise struct.error("a name runs past the end")
                    if _list:
                        names.add(data[pos + 4 : pos + 4 + n].decode())
                    pos += 4 + n
        elif "supported" in pairs:
            data, pos = pairs["supported"], 5 * 4
            while pos + 4 <= len(data):
                (n,) = _U32.unpack_from(data, pos)
                if pos + 4 + n > len(data):
                    break
                names.add(data[pos + 4 : pos + 4 + n].decode())
                pos += 4 + n
    return names


#: The extension that hashes a file on the server (draft-ietf-secsh-filexfer-extensions-00
#: section 3): announced as ``check-file``, asked as ``check-file-name``.
CHECK_FILE = "check-file"

#: Files of one batch in flight at once on the session, and the bytes of one read or
#: write request.
PIPELINE_FILES = 64
REQUEST_BYTES = 32768

# SFTP version 3 (draft-ietf-secsh-filexfer-02), the requests and replies put_many uses.
_OPEN, _CLOSE, _WRITE, _LSTAT, _REMOVE, _RENAME, _EXTENDED = 3, 4, 6, 7, 13, 18, 200
_STATUS, _HANDLE, _ATTRS = 101, 102, 105
_OK, _NO_SUCH_FILE, _PERMISSION_DENIED = 0, 2, 3
_OPEN_WRITE_CREATE_TRUNCATE = 0x02 | 0x08 | 0x10
_READ, _DATA, _EOF, _OPEN_READ = 5, 103, 1, 0x01
_EXTENDED_REPLY = 201
_ATTR_SIZE = 0x01
_FRAME = struct.Struct(">IBI")  # length, type, request id
_U32, _U64 = struct.Struct(">I"), struct.Struct(">Q")


def _string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


class Pipeline:
    """The requests of many files overlapped on one SFTP session.

    Up to ``PIPELINE_FILES`` files are in flight: the requests that the replies read so
    far call for go out together in one channel write, and replies are read as they come,
    many per read. paramiko's SFTP client sends one SSH message per request and reads
    each reply with two reads, which is most of the time of a small file; here the
    session's channel (``SFTPClient.get_channel()``) carries the SFTP packets directly.
    The client has no request of its own outstanding meanwhile (one thread uses a
    session), and any failure closes the session. Subclasses say what one file does:
    ``_open`` its first request, ``_step`` on each reply, ``_result`` when it is done.
    """

    #: The files, in order (set by subclasses).
    jobs: Sequence[Any]

    def __init__(self, place: Place, channel: Channel, count: int) -> None:
        self.place = place
        self.channel = channel
        # A file counts as done only once its last reply says so.
        unconfirmed = ConnectionLost(f"{place.where}: the transfer was not confirmed")
        self.results: builtins.list[Any] = [unconfirmed] * count
        self.unfinished = set(range(count))
        #: Request id -> (job, step) for every request without its reply yet.
        self.waiting: dict[int, tuple[Any, Any]] = {}
        # Ids far from the ones paramiko's client counts up from 1.
        self.next_id = 0x40000000
        self.outgoing = bytearray()
        self.incoming = bytearray()

    def run(self, jobs: Sequence[Any]) -> None:
        queue = iter(jobs)
        for job in itertools.islice(queue, PIPELINE_FILES):
            self._open(job)
        while self.waiting:
            self._flush()
            for t, rid, body in self._replies():
                if rid not in self.waiting:
                    continue
                job, step = self.waiting.pop(rid)
                if self._step(job, step, t, body):
                    self.results[job.index] = self._result(job)
                    self.unfinished.discard(job.index)
                    nxt = next(queue, None)
                    if nxt is not None:
                        self._open(nxt)

    def fail_unfinished(self, exc: RemoteError) -> None:
        for index in self.unfinished:
            self.results[index] = exc

    def _open(self, job: Any) -> None:
        raise NotImplementedError

    def _step(self, job: Any, step: Any, t: int, body: memoryview) -> bool:
        raise NotImplementedError

    def _result(self, job: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ wire

    def _send(self, job: Any, step: Any, t: int, *fields: bytes) -> None:
        rid = self.next_id
        self.next_id = (rid + 1) & 0xFFFFFFFF
        payload = b"".join(fields)
        self.outgoing += _FRAME.pack(len(payload) + 5, t, rid) + payload
        self.waiting[rid] = (job, step)

    def _flush(self) -> None:
        if self.outgoing:
            self.channel.sendall(bytes(self.outgoing))
            self.outgoing.clear()

    def _replies(self) -> builtins.list[tuple[int, int, memoryview]]:
        """The complete replies received (at least one; waits for it)."""
        while True:
            frames = []
            buf, pos = self.incoming, 0
            while len(buf) - pos >= 9:
                length, t, rid = _FRAME.unpack_from(buf, pos)
                if len(buf) - pos - 4 < length:
                    break
                frames.append((t, rid, memoryview(bytes(buf[pos + 9 : pos + 4 + length]))))
                pos += 4 + length
            del buf[:pos]
            if frames:
                return frames
            data = self.channel.recv(1 << 16)
            if not data:
                raise EOFError("the server closed the SFTP channel")
            self.incoming += data

    def _error(self, t: int, body: memoryview, what: str) -> RemoteError | None:
        where = f"{self.place.where}: {what}"
        if t != _STATUS:
            return RemoteUnavailable(f"{where}: unexpected reply {t}")
        (code,) = _U32.unpack_from(body)
        if code == _OK:
            return None
        if code == _NO_SUCH_FILE:
            return RemoteNotFound(f"{where}: no such file or folder")
        if code == _PERMISSION_DENIED:
            return RemotePermissionDenied(f"{where}: permission denied")
        text = ""
        if len(body) >= 8:
            (length,) = _U32.unpack_from(body, 4)
            text = bytes(body[8 : 8 + length]).decode("utf-8", "replace")
        return RemoteUnavailable(f"{where}: the server reported: {said_failure(text, code)}")


@dataclass(slots=True)
class PutJob:
    """One file of a delivery and where it stands: its bytes come from ``put.data`` (a
    small file in memory), from ``source`` (read as the writes go), or are on the server
    under the temporary name already (``uploaded``: sent by OpenSSH's client)."""

    index: int
    put: SmallPut
    size: int
    source: BinaryIO | None
    uploaded: bool = False
    temp: bytes = b""
    final: bytes = b""
    aside: bytes = b""
    handle: bytes = b""
    #: upload -> (look | aside) -> rename -> done, or -> discard on an error.
    phase: str = "upload"
    #: Bytes sent so far, and whether the last of them (and the close) is out.
    sent: int = 0
    all_sent: bool = False
    opened: bool = False
    #: Requests without their reply yet.
    pending: int = 0
    #: The final name is taken (a look or the check sent with the rename says so).
    taken: bool = False
    #: The old file was moved aside (overwrite without posix-rename).
    moved_aside: bool = False
    #: Called once the bytes are in, right before the rename; what it raises stops the
    #: delivery (the temporary file removed) and is kept in ``halted``.
    before_rename: Callable[[], None] | None = None
    halted: Exception | None = None
    renamed: bool = False
    rename_error: RemoteError | None = None
    #: The size check came back before the rename's reply on a server that answers out
    #: of order: it is asked again once the rename is confirmed.
    check_again: bool = False
    #: The final file's time, from the size check.
    mtime_ns: int = 0
    error: RemoteError | None = None
    #: How the temporary file is verified before the rename, and the digest of the bytes
    #: sent (computed as they go; given whole for a file OpenSSH's client sent).
    check: Check = SIZE_ONLY
    digest: Any = None
    #: Reading back: the handle, the next offset to ask, the bytes hashed so far in order
    #: (``found``), replies that came ahead of their turn, and what the reads showed.
    read_handle: bytes = b""
    read_next: int = 0
    read_done: int = 0
    found: Any = None
    ahead: dict[int, bytes] = field(default_factory=dict)
    short: bool = False
    longer: bool = False
    #: The digest the server computed (check-file).
    server_digest: str = ""


def _attrs(body: memoryview) -> tuple[int | None, int | None]:
    """Size and modification time from an ATTRS reply (None: not given)."""
    (flags,) = _U32.unpack_from(body)
    pos, size, mtime = 4, None, None
    if flags & _ATTR_SIZE:
        (size,) = _U64.unpack_from(body, pos)
        pos += 8
    if flags & 0x02:  # uid, gid
        pos += 8
    if flags & _ATTR_PERMISSIONS:
        pos += 4
    if flags & 0x08:  # atime, mtime
        (mtime,) = _U32.unpack_from(body, pos + 4)
    return size, mtime


#: Write requests of one file in flight at once (a big file streams through this window).
WRITE_WINDOW = 64
_SETSTAT, _FSETSTAT, _ATTR_PERMISSIONS = 9, 10, 0x04


class PipelinedPuts(Pipeline):
    """Deliveries, many files overlapped on one session, each through these steps:

    1. open the temporary name; the writes (a window of ``WRITE_WINDOW`` requests, refilled
       as replies come, in whatever order the server answers: gesftpserver answers writes
       out of order), the mode (``fsetstat``) and the close follow it;
    2. without overwrite, on a server whose plain rename replaces files: a look at the final
       name right before the rename (taken: ``TargetExists``);
    3. the rename: ``posix-rename@openssh.com`` to overwrite, or, where the server lacks it,
       the old file moved aside, the new one renamed in, the old one deleted (moved back
       if the rename fails); a plain rename otherwise (refused when the name is taken);
    4. the size under the final name, checked.

    A file counts as delivered only once the check's reply says so; on an error its
    temporary file is removed.
    """

    def __init__(self, place: Place, channel: Channel, jobs: Sequence[PutJob]) -> None:
        super().__init__(place, channel, len(jobs))
        self.can = place.capabilities()
        self.mode_refused = False
        for job in jobs:
            job.temp = place.path(job.put.temp_name).encode("utf-8")
            job.final = place.path(job.put.name).encode("utf-8")
            aside = hidden_name(job.put.name, secrets.token_hex(4), "xchange-old")
            job.aside = place.path(aside).encode("utf-8")
            if job.check.way != "size" and job.digest is None:
                job.digest = hashlib.new(job.check.algorithm)
        self.jobs = jobs

    def _result(self, job: PutJob) -> RemoteError | None:
        return job.error

    def _request(self, job: PutJob, step: Any, t: int, *fields: bytes) -> None:
        self._send(job, step, t, *fields)
        job.pending += 1

    # ------------------------------------------------------------------ upload

    def _open(self, job: PutJob) -> None:
        if job.uploaded:
            # Sent by OpenSSH's client: its size, and its mode, then on as usual.
            self._request(job, "sent", _LSTAT, _string(job.temp))
            if self._wants_mode(job):
                self._mode(job, _SETSTAT, _string(job.temp))
            return
        flags = _U32.pack(_OPEN_WRITE_CREATE_TRUNCATE)
        self._request(job, "open", _OPEN, _string(job.temp), flags, _U32.pack(0))

    def _wants_mode(self, job: PutJob) -> bool:
        """A mode is asked for, and the server keeps the modes it is given."""
        return job.put.mode is not None and self.can.keeps_modes

    def _mode(self, job: PutJob, request: int, target: bytes) -> None:
        assert job.put.mode is not None
        attrs = _U32.pack(_ATTR_PERMISSIONS) + _U32.pack(job.put.mode & 0o7777)
        self._request(job, "mode", request, target, attrs)

    def _chunk(self, job: PutJob) -> bytes:
        want = min(REQUEST_BYTES, job.size - job.sent)
        if want <= 0:
            return b""
        if job.source is None:
            chunk = job.put.data[job.sent : job.sent + want]
        else:
            chunk = job.source.read(want)
            advance(len(chunk))  # (a person waiting on a big upload sees it move)
        if job.digest is not None:
            job.digest.update(chunk)
        return chunk

    def _fill(self, job: PutJob) -> None:
        """Keep the window of writes full; after the last one (or an error), the mode and
        the close."""
        handle = _string(job.handle)
        while not job.all_sent and job.pending < WRITE_WINDOW:
            chunk = b"" if job.error is not None else self._chunk(job)
            if not chunk:
                job.all_sent = True
                if job.error is None and job.sent != job.size:
                    job.error = ConnectionLost(
                        f"{self.place.where}: {job.put.name}: the source gave {job.sent} "
                        f"bytes, not {job.size}"
                    )
                if self._wants_mode(job) and job.error is None:
                    self._mode(job, _FSETSTAT, handle)
                self._request(job, "close", _CLOSE, handle)
                return
            self._request(job, "write", _WRITE, handle, _U64.pack(job.sent), _string(chunk))
            job.sent += len(chunk)

    # ------------------------------------------------------------------ replies

    def _step(self, job: PutJob, step: Any, t: int, body: memoryview) -> bool:
        """Act on one reply; True when the job is finished (well or not)."""
        job.pending -= 1
        name = job.put.name
        if step == "open":
            if t != _HANDLE:
                job.error = self._error(t, body, f"upload {name}") or RemoteUnavailable(
                    f"{self.place.where}: upload {name}: no handle"
                )
                return True
            job.opened = True
            (length,) = _U32.unpack_from(body)
            job.handle = bytes(body[4 : 4 + length])
            self._fill(job)
        elif step == "write":
            job.error = job.error or self._error(t, body, f"upload {name}")
            self._fill(job)
        elif step == "close":
            job.error = job.error or self._error(t, body, f"upload {name}")
        elif step == "mode":
            # A server that keeps its own modes (rclone) may refuse: the file still goes.
            if self._error(t, body, f"set the mode of {name}") is not None:
                self.mode_refused = True
        elif step == "sent":
            job.error = job.error or self._sized(t, body, job, "the upload is incomplete")
        elif step == "look":
            if t == _ATTRS:
                job.taken = True
            else:
                error = self._error(t, body, f"look at {name}")
                if not isinstance(error, RemoteNotFound):
                    job.error = error or RemoteUnavailable(
                        f"{self.place.where}: look at {name}: unexpected reply"
                    )
        elif step == "aside":
            error = self._error(t, body, f"move the old {name} aside")
            if error is None:
                job.moved_aside = True
            elif not isinstance(error, RemoteNotFound):  # not found: no old file
                job.error = error
        elif step == "rename":
            self._renamed(job, t, body)
        elif step == "restore":
            job.moved_aside = False
        elif step == "check":
            self._checked(job, t, body)
        elif step == "hash":
            self._hashed(job, t, body)
        elif step == "rb-open":
            self._read_open(job, t, body)
        elif isinstance(step, int):
            self._read(job, step, t, body)
        elif step == "rb-end":
            if t == _DATA:
                job.longer = True
            elif not (t == _STATUS and _U32.unpack_from(body)[0] == _EOF):
                job.error = job.error or self._error(t, body, f"read back {name}")
        elif step == "rb-close":
            job.error = job.error or self._error(t, body, f"read back {name}")
        if job.pending:
            return False
        return self._next(job)

    def _next(self, job: PutJob) -> bool:
        """All replies of a phase are in: on to the next one; True when done."""
        phase = job.phase
        if phase == "discard":
            return True
        if job.error is not None and phase != "rename":
            return self._discard(job)
        if phase == "upload":
            checkpoint("before-rename")
            if job.before_rename is not None:
                try:
                    job.before_rename()
                except Exception as exc:  # (the caller's reason, raised again by the caller)
                    job.halted = exc
                    job.error = RemoteUnavailable(
                        f"{self.place.where}: {job.put.name}: stopped before the rename: {exc}"
                    )
                    return self._discard(job)
            if job.check.way != "size":
                return self._verify(job)
            return self._place(job)
        if phase == "verify":
            error = self._compared(job)
            if error is not None:
                job.error = error
                return self._discard(job)
            return self._place(job)
        if phase == "look" and job.taken:
            job.error = TargetExists(f"{self.place.where}: {job.put.name} already exists")
            return self._discard(job)
        if phase in ("look", "aside"):
            return self._rename(job)
        # The rename is over.
        if job.rename_error is not None:
            taken = not job.put.overwrite and job.taken
            job.error = (
                TargetExists(f"{self.place.where}: {job.put.name} already exists")
                if taken
                else job.rename_error
            )
            return self._discard(job)
        return True

    def _place(self, job: PutJob) -> bool:
        """The bytes are in (and verified): look, move the old file aside, or rename."""
        if not job.put.overwrite and not self.can.rename_refuses:
            # This server's rename would replace a file: look right before renaming.
            job.phase = "look"
            self._request(job, "look", _LSTAT, _string(job.final))
            return False
        if job.put.overwrite and not self.can.posix_rename and self.can.rename_refuses:
            job.phase = "aside"
            self._request(job, "aside", _RENAME, _string(job.final), _string(job.aside))
            return False
        return self._rename(job)

    # ------------------------------------------------------------------ verify

    def _verify(self, job: PutJob) -> bool:
        """Before the rename: the server hashes the temporary file, or it is read back."""
        job.phase = "verify"
        temp = _string(job.temp)
        if job.check.way == "server":
            # The whole file by its length (never 0, "to the end": proftpd#1439), in one
            # block: the reply is one digest.
            self._request(
                job,
                "hash",
                _EXTENDED,
                _string(b"check-file-name"),
                temp,
                _string(job.check.algorithm.encode()),
                _U64.pack(0),
                _U64.pack(job.size),
                _U32.pack(0),
            )
        else:
            job.found = hashlib.new(job.check.algorithm)
            self._request(job, "rb-open", _OPEN, temp, _U32.pack(_OPEN_READ), _U32.pack(0))
        return False

    def _hashed(self, job: PutJob, t: int, body: memoryview) -> None:
        what = f"hash {job.put.name} on the server"
        if t != _EXTENDED_REPLY:
            job.error = (
                job.error
                or self._error(t, body, what)
                or RemoteUnavailable(f"{self.place.where}: {what}: unexpected reply {t}")
            )
            return
        (n,) = _U32.unpack_from(body)
        algorithm = bytes(body[4 : 4 + n]).decode("ascii", "replace")
        if algorithm != job.check.algorithm:
            job.error = job.error or RemoteUnavailable(
                f"{self.place.where}: {what}: asked for {job.check.algorithm}, got {algorithm}"
            )
            return
        job.server_digest = bytes(body[4 + n :]).hex()

    def _read_open(self, job: PutJob, t: int, body: memoryview) -> None:
        if t != _HANDLE:
            job.error = job.error or self._error(t, body, f"read back {job.put.name}")
            return
        (n,) = _U32.unpack_from(body)
        job.read_handle = bytes(body[4 : 4 + n])
        self._read_more(job)

    def _read_more(self, job: PutJob) -> None:
        """Keep a window of reads out; after the last, one read past the end (the server
        must answer end-of-file: the file is no longer than sent) and the close."""
        handle = _string(job.read_handle)
        while job.read_next < job.size and job.pending < WRITE_WINDOW:
            want = min(REQUEST_BYTES, job.size - job.read_next)
            self._request(
                job, job.read_next, _READ, handle, _U64.pack(job.read_next), _U32.pack(want)
            )
            job.read_next += want
            if job.read_next == job.size:
                self._request(job, "rb-end", _READ, handle, _U64.pack(job.size), _U32.pack(1))
                self._request(job, "rb-close", _CLOSE, handle)

    def _read(self, job: PutJob, offset: int, t: int, body: memoryview) -> None:
        if t == _DATA:
            (n,) = _U32.unpack_from(body)
            data = bytes(body[4 : 4 + n])
            want = min(REQUEST_BYTES, job.size - offset)
            if 0 < n < want:  # a short read: ask for the rest
                rest = offset + n
                self._request(
                    job,
                    rest,
                    _READ,
                    _string(job.read_handle),
                    _U64.pack(rest),
                    _U32.pack(want - n),
                )
            if n:
                job.ahead[offset] = data
            # Hashed in order, whatever order the replies come in.
            while job.read_done in job.ahead:
                chunk = job.ahead.pop(job.read_done)
                job.found.update(chunk)
                job.read_done += len(chunk)
        elif t == _STATUS and _U32.unpack_from(body)[0] == _EOF:
            job.short = True
        else:
            job.error = job.error or self._error(t, body, f"read back {job.put.name}")
        if job.error is None:
            self._read_more(job)
        elif job.read_next < job.size:
            job.read_next = job.size  # no more reads: the handle closed
            self._request(job, "rb-close", _CLOSE, _string(job.read_handle))

    def _compared(self, job: PutJob) -> RemoteError | None:
        """The verification's verdict, once all its replies are in."""
        sent = job.digest.hexdigest()
        if job.check.way == "server":
            found = job.server_digest
        else:
            found = job.found.hexdigest()
            if job.short or job.longer or job.read_done != job.size:
                found += f" ({'more than' if job.longer else job.read_done} of {job.size} bytes)"
        if found == sent:
            return None
        return mismatch(self.place.where, job.put.name, job.check, sent, found)

    def _rename(self, job: PutJob) -> bool:
        job.phase = "rename"
        temp, final = _string(job.temp), _string(job.final)
        if job.put.overwrite and self.can.posix_rename:
            extension = _string(b"posix-rename@openssh.com")
            self._request(job, "rename", _EXTENDED, extension, temp, final)
        else:
            self._request(job, "rename", _RENAME, temp, final)
        # The size check goes with it (a server answering in order replies after the
        # rename; one that does not is asked again once the rename is confirmed).
        self._request(job, "check", _LSTAT, final)
        return False

    def _renamed(self, job: PutJob, t: int, body: memoryview) -> None:
        error = self._error(t, body, f"rename to {job.put.name}")
        if error is None:
            job.renamed = True
            if job.moved_aside:
                job.moved_aside = False
                self._request(job, "drop-old", _REMOVE, _string(job.aside))
            if job.check_again:
                job.check_again = False
                job.error = None
                self._request(job, "check", _LSTAT, _string(job.final))
            return
        job.rename_error = error
        if job.moved_aside:
            self._request(job, "restore", _RENAME, _string(job.aside), _string(job.final))

    def _checked(self, job: PutJob, t: int, body: memoryview) -> None:
        if job.renamed:
            job.error = job.error or self._sized(t, body, job, "")
            return
        job.taken = t == _ATTRS
        if job.rename_error is None:
            job.check_again = True  # came before the rename's reply

    def _sized(self, t: int, body: memoryview, job: PutJob, what: str) -> RemoteError | None:
        """The error a stat reply shows (None: the expected size)."""
        name = job.put.name
        if t != _ATTRS:
            return self._error(t, body, f"check {name}") or RemoteUnavailable(
                f"{self.place.where}: check {name}: no attributes"
            )
        size, mtime = _attrs(body)
        if size == job.size:
            job.mtime_ns = (mtime or 0) * 1_000_000_000
            return None
        return ConnectionLost(
            f"{self.place.where}: {name}: {what + ': ' if what else ''}sent {job.size} "
            f"bytes but the server shows {size}"
        )

    def _discard(self, job: PutJob) -> bool:
        """Remove the temporary file (if there is one); the job ends with its error."""
        job.phase = "discard"
        if job.opened or job.uploaded:
            self._request(job, "discard", _REMOVE, _string(job.temp))
            return False
        return True


@dataclass(slots=True)
class GetJob:
    """One file of a ``get_many`` and where it stands."""

    index: int
    name: str
    path: bytes
    size: int
    pending: int = 0
    chunks: dict[int, bytes] = field(default_factory=dict)
    error: RemoteError | None = None


class PipelinedGets(Pipeline):
    """Small downloads: each file open -> reads of its listed size, one read past its end
    (the server must answer end-of-file), close -- all sent together once it is open. A
    file whose size is not the listed one (it grew, shrank or a read came back short) is
    an error, and its caller reads it again the careful way."""

    def __init__(self, place: Place, channel: Channel, files: Sequence[FileInfo]) -> None:
        super().__init__(place, channel, len(files))
        self.jobs = [
            GetJob(i, f.name, place.path(f.name).encode("utf-8"), f.size)
            for i, f in enumerate(files)
        ]

    def _open(self, job: GetJob) -> None:
        self._send(job, "open", _OPEN, _string(job.path), _U32.pack(_OPEN_READ), _U32.pack(0))

    def _result(self, job: GetJob) -> bytes | RemoteError:
        if job.error is not None:
            return job.error
        return b"".join(job.chunks[offset] for offset in sorted(job.chunks))

    def _changed(self, job: GetJob) -> RemoteError:
        return RemoteUnavailable(
            f"{self.place.where}: {job.name}: not {job.size} bytes as listed (changed while "
            f"it was read)"
        )

    def _step(self, job: GetJob, step: Any, t: int, body: memoryview) -> bool:
        what = f"read {job.name}"
        if step == "open":
            if t != _HANDLE:
                job.error = self._error(t, body, what) or RemoteUnavailable(
                    f"{self.place.where}: {what}: no handle"
                )
                return True
            (length,) = _U32.unpack_from(body)
            handle = _string(bytes(body[4 : 4 + length]))
            for offset in range(0, job.size, REQUEST_BYTES):
                want = min(REQUEST_BYTES, job.size - offset)
                self._send(job, offset, _READ, handle, _U64.pack(offset), _U32.pack(want))
                job.pending += 1
            self._send(job, "end", _READ, handle, _U64.pack(job.size), _U32.pack(1))
            self._send(job, "close", _CLOSE, handle)
            job.pending += 2
            return False
        job.pending -= 1
        if step == "close":
            job.error = job.error or self._error(t, body, what)
        elif step == "end":
            if t == _DATA:
                job.error = job.error or self._changed(job)  # there is more than listed
            elif not self._at_end(t, body):
                job.error = job.error or self._error(t, body, what)
        elif t == _DATA:
            (length,) = _U32.unpack_from(body)
            data = bytes(body[4 : 4 + length])
            if len(data) != min(REQUEST_BYTES, job.size - step):
                job.error = job.error or self._changed(job)  # short: shrank, or a short read
            job.chunks[step] = data
        elif self._at_end(t, body):
            job.error = job.error or self._changed(job)  # ends before the listed size
        else:
            job.error = job.error or self._error(t, body, what)
        return not job.pending

    @staticmethod
    def _at_end(t: int, body: memoryview) -> bool:
        return t == _STATUS and _U32.unpack_from(body)[0] == _EOF


@dataclass(slots=True)
class MoveJob:
    index: int
    name: str
    source: bytes
    dest: bytes
    place: str
    expect: FileInfo | None = None
    pending: int = 0
    taken: bool = False
    renamed: bool = False
    error: RemoteError | None = None


def _same(t: int, body: memoryview, expect: FileInfo) -> bool:
    """Whether an LSTAT reply shows the file taken (size and time)."""
    if t != _ATTRS:
        return False
    size, mtime = _attrs(body)
    return expect.same_file(FileInfo(expect.name, size or 0, (mtime or 0) * 1_000_000_000))


class PipelinedMoves(Pipeline):
    """Archive moves: a plain SFTP rename each, which refuses a name already taken; on a
    server whose rename replaces files, a look at the name first (taken: an error, and
    ``move`` finds a free name). With the files as they were taken, each is looked at
    right before its rename (changed: left in place) and right after it (replaced in
    between: put back)."""

    def __init__(
        self,
        place: Place,
        channel: Channel,
        names: Sequence[str],
        sub: str,
        expect: Sequence[FileInfo] | None = None,
    ) -> None:
        super().__init__(place, channel, len(names))
        self.look_first = not place.capabilities().rename_refuses
        dest_dir = posixpath.join(place.root, sub)
        self.jobs = [
            MoveJob(
                i,
                name,
                place.path(name).encode("utf-8"),
                posixpath.join(dest_dir, posixpath.basename(name)).encode("utf-8"),
                posixpath.join(sub, posixpath.basename(name)),
                expect[i] if expect else None,
            )
            for i, name in enumerate(names)
        ]

    def _request(self, job: MoveJob, step: str, t: int, *fields: bytes) -> None:
        self._send(job, step, t, *fields)
        job.pending += 1

    def _open(self, job: MoveJob) -> None:
        if self.look_first:
            self._request(job, "look", _LSTAT, _string(job.dest))
        if job.expect is not None:
            self._request(job, "still", _LSTAT, _string(job.source))
        if not job.pending:
            self._rename(job)

    def _rename(self, job: MoveJob) -> None:
        self._request(job, "rename", _RENAME, _string(job.source), _string(job.dest))
        if job.expect is not None:
            self._request(job, "moved", _LSTAT, _string(job.dest))

    def _changed(self, job: MoveJob, what: str) -> SourceChanged:
        return SourceChanged(f"{self.place.where}: {job.name}: {what}")

    def _step(self, job: MoveJob, step: Any, t: int, body: memoryview) -> bool:
        job.pending -= 1
        where = f"archive {job.name}"
        if step == "look":
            if t == _ATTRS:
                job.taken = True
            else:
                error = self._error(t, body, where)
                if not isinstance(error, RemoteNotFound):
                    job.error = job.error or error
        elif step == "still":
            if not _same(t, body, job.expect):  # type: ignore[arg-type]
                error = self._error(t, body, where) if t != _ATTRS else None
                job.error = (
                    job.error
                    or error
                    or self._changed(
                        job, "changed since it was taken; left in place, to be taken as new"
                    )
                )
        elif step == "rename":
            job.error = self._error(t, body, where)
            job.renamed = job.error is None
        elif step == "moved":
            self._moved(job, t, body)
        if job.pending:
            return False
        if step in ("look", "still"):
            if job.taken and job.error is None:
                job.error = TargetExists(f"{self.place.where}: {where}: {job.place} already exists")
            if job.error is None:
                self._rename(job)
                return False
        return True

    def _moved(self, job: MoveJob, t: int, body: memoryview) -> None:
        """After the rename: what was moved is the file taken, else it goes back."""
        assert job.expect is not None
        if job.renamed and not _same(t, body, job.expect):
            job.error = self._changed(
                job, "replaced while it was being moved; put back, to be taken as new"
            )
            self._request(job, "back", _RENAME, _string(job.dest), _string(job.source))

    def _result(self, job: MoveJob) -> str | RemoteError:
        return job.error if job.error is not None else job.place


@dataclass(slots=True)
class RemoveJob:
    index: int
    name: str
    path: bytes
    aside: bytes = b""
    expect: FileInfo | None = None
    error: RemoteError | None = None


class PipelinedRemoves(Pipeline):
    """Deletes: one SFTP remove each (a file already gone is not an error). With the files
    as they were taken, each is moved aside first and judged by what was moved: the file
    taken is deleted, another one is put back."""

    def __init__(
        self,
        place: Place,
        channel: Channel,
        names: Sequence[str],
        expect: Sequence[FileInfo] | None = None,
    ) -> None:
        super().__init__(place, channel, len(names))
        self.jobs = []
        for i, name in enumerate(names):
            path = place.path(name)
            aside = place.path(hidden_name(name, secrets.token_hex(4), "xchange-del"))
            self.jobs.append(
                RemoveJob(
                    i,
                    name,
                    path.encode("utf-8"),
                    aside.encode("utf-8"),
                    expect[i] if expect else None,
                )
            )

    def _open(self, job: RemoveJob) -> None:
        if job.expect is None:
            self._send(job, "remove", _REMOVE, _string(job.path))
        else:
            self._send(job, "aside", _RENAME, _string(job.path), _string(job.aside))

    def _step(self, job: RemoveJob, step: Any, t: int, body: memoryview) -> bool:
        error = self._error(t, body, f"remove {job.name}") if step != "judge" else None
        if step == "aside":
            if isinstance(error, RemoteNotFound):
                return True  # gone already
            if error is not None:
                job.error = error
                return True
            self._send(job, "judge", _LSTAT, _string(job.aside))
            return False
        if step == "judge":
            if _same(t, body, job.expect):  # type: ignore[arg-type]
                self._send(job, "remove", _REMOVE, _string(job.aside))
            else:
                job.error = SourceChanged(
                    f"{self.place.where}: {job.name}: changed since it was taken; left in "
                    "place, to be taken as a new file"
                )
                self._send(job, "back", _RENAME, _string(job.aside), _string(job.path))
            return False
        if step == "remove":
            job.error = None if isinstance(error, RemoteNotFound) else error
        return True

    def _result(self, job: RemoveJob) -> RemoteError | None:
        return job.error


#: The extension that says how much room a server's file system has (OpenSSH's).
STATVFS = "statvfs@openssh.com"
_STATVFS = struct.Struct(">11Q")


@dataclass(slots=True)
class SpaceJob:
    index: int
    path: bytes
    free: int | None = None


class FreeSpace(Pipeline):
    """The bytes free to this user where a folder is, as the server says through
    ``statvfs@openssh.com`` (blocks available times the fragment size); None if it does
    not say."""

    def __init__(self, place: Place, channel: Channel, folder: str) -> None:
        super().__init__(place, channel, 1)
        self.jobs = [SpaceJob(0, folder.encode("utf-8"))]

    def _open(self, job: SpaceJob) -> None:
        self._send(job, "space", _EXTENDED, _string(STATVFS.encode()), _string(job.path))

    def _step(self, job: SpaceJob, step: Any, t: int, body: memoryview) -> bool:
        if t == _EXTENDED_REPLY and len(body) >= _STATVFS.size:
            fields = _STATVFS.unpack_from(body)
            job.free = fields[4] * (fields[1] or fields[0])  # f_bavail * (f_frsize or f_bsize)
        return True

    def _result(self, job: SpaceJob) -> int | None:
        return job.free


@dataclass(slots=True)
class HashJob:
    index: int
    path: bytes
    size: int
    result: tuple[str, str] | RemoteError | None = None


class FileHash(Pipeline):
    """A digest of a whole file as the server computes it (``check-file-name``): the
    first of ``algorithms`` it knows, and the digest in hex; or the error it answered."""

    def __init__(
        self, place: Place, channel: Channel, path: str, size: int, algorithms: Sequence[str]
    ) -> None:
        super().__init__(place, channel, 1)
        self.algorithms = ",".join(algorithms).encode()
        self.jobs = [HashJob(0, path.encode("utf-8"), size)]

    def _open(self, job: HashJob) -> None:
        self._send(
            job,
            "hash",
            _EXTENDED,
            _string(b"check-file-name"),
            _string(job.path),
            _string(self.algorithms),
            _U64.pack(0),
            _U64.pack(job.size),
            _U32.pack(0),
        )

    def _step(self, job: HashJob, step: Any, t: int, body: memoryview) -> bool:
        if t == _EXTENDED_REPLY:
            (n,) = _U32.unpack_from(body)
            algorithm = bytes(body[4 : 4 + n]).decode("ascii", "replace")
            job.result = (algorithm, bytes(body[4 + n :]).hex())
        else:
            job.result = self._error(t, body, "hash a file on the server") or RemoteUnavailable(
                f"{self.place.where}: hash a file on the server: unexpected reply {t}"
            )
        return True

    def _result(self, job: HashJob) -> tuple[str, str] | RemoteError | None:
        return job.result


#: READDIR requests in flight on one open folder at most, and at its start. A server
#: answers each with a part of the folder (OpenSSH: 100 names), so one request at a time
#: costs a round trip per hundred files: 100,000 files over a 150 ms link took 155 s.
#: The window opens by one request per reply (doubling each round trip, as TCP's slow
#: start does), so that a small folder costs few requests answered at its end; a folder
#: listed before starts with as many requests as its last listing had replies.
LIST_WINDOW = 128
LIST_START = 16

_OPENDIR, _READDIR, _NAME = 11, 12, 104
_ATTR_UIDGID, _ATTR_ACMODTIME, _ATTR_EXTENDED = 0x02, 0x08, 0x80000000
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, 0o100000, 0o040000

#: What a folder's reader asks of each regular file: keep it (name, size, mtime_ns)?
Keep = Callable[[str, int, int], bool]


@dataclass(slots=True)
class FolderJob:
    index: int
    path: bytes
    handle: bytes = b""
    #: READDIR requests sent and not answered yet, and how many may be.
    pending: int = 0
    window: int = LIST_START
    #: The server said the folder has no more names (or failed: ``error``).
    done: bool = False
    error: RemoteError | None = None


class ReadFolder(Pipeline):
    """One folder's entries, read with up to ``LIST_WINDOW`` READDIR requests in flight on
    its open handle, each reply taken apart as it comes.

    SFTP makes a server process the requests of one handle as if one at a time
    (draft-ietf-secsh-filexfer-02 section 6: "the results in the responses will be the
    same as if it had sent the requests one at a time"), so the requests in flight return
    successive, distinct parts of the folder. Replies may come in any order (gesftpserver
    answers out of order): every reply is read, names that come after the end-of-folder
    answer too, before the handle is closed.

    Regular files become :class:`FileInfo` (``prefix`` + name) only if ``keep`` (given
    name, size and mtime_ns) keeps them: a folder of 100,000 old files costs no object per
    file that is not wanted. Sub-folders' names are collected in ``folders``. Names that
    start with a dot or end in ``.xchange-part`` are skipped, unless ``hidden``; names
    that are not UTF-8 are counted in ``undecodable`` (they cannot be asked for by name).
    """

    def __init__(
        self,
        place: Place,
        channel: Channel,
        path: str,
        prefix: str = "",
        keep: Keep | None = None,
        *,
        hidden: bool = False,
        start: int = LIST_START,
    ) -> None:
        super().__init__(place, channel, 1)
        window = max(1, min(start, LIST_WINDOW))
        self.jobs = [FolderJob(0, path.encode("utf-8"), window=window)]
        self.what = f"list {path}"
        self.prefix = prefix
        self.keep = keep
        self.hidden = hidden
        self.files: builtins.list[FileInfo] = []
        self.folders: builtins.list[str] = []
        self.undecodable = 0
        #: Names replies carried (every kind of entry), and READDIR requests answered with
        #: names (what the next listing of the folder starts from: counting the
        #: end-of-folder answers to requests sent past the end would make it grow).
        self.seen = 0
        self.named = 0

    def _open(self, job: FolderJob) -> None:
        self._send(job, "open", _OPENDIR, _string(job.path))

    def _result(self, job: FolderJob) -> RemoteError | None:
        return job.error

    def _read(self, job: FolderJob, count: int) -> None:
        for _ in range(count):
            self._send(job, "read", _READDIR, job.handle)
            job.pending += 1

    def _step(self, job: FolderJob, step: Any, t: int, body: memoryview) -> bool:
        if step == "open":
            if t != _HANDLE:
                job.error = self._error(t, body, self.what) or RemoteUnavailable(
                    f"{self.place.where}: {self.what}: no handle"
                )
                return True
            (length,) = _U32.unpack_from(body)
            job.handle = _string(bytes(body[4 : 4 + length]))
            self._read(job, job.window)
            return False
        if step == "close":
            return True  # the names are all in: a failed close loses nothing
        job.pending -= 1
        if t == _NAME:
            self.named += 1
            try:
                self._entries(body)
            except struct.error:
                job.error = job.error or RemoteUnavailable(
                    f"{self.place.where}: {self.what}: a malformed reply"
                )
                job.done = True
            if not job.done:
                # One request for the one answered, one more while the window opens.
                more = 2 if job.window < LIST_WINDOW else 1
                job.window = min(job.window + 1, LIST_WINDOW)
                self._read(job, more)
        else:
            if not (t == _STATUS and _U32.unpack_from(body)[0] == _EOF):
                job.error = job.error or self._error(t, body, self.what)
            job.done = True
        if job.pending:
            return False
        self._send(job, "close", _CLOSE, job.handle)
        return False

    def _entries(self, body: memoryview) -> None:
        """Take one NAME reply apart: (name, long name, attributes) per entry."""
        data = body.tobytes()
        (count,) = _U32.unpack_from(data)
        self.seen += count
        pos, end = 4, len(data)
        u32, usual = _U32.unpack_from, _USUAL_ATTRS.unpack_from
        keep, prefix, hidden = self.keep, self.prefix, self.hidden
        for _ in range(count):
            (n,) = u32(data, pos)
            raw = data[pos + 4 : pos + 4 + n]
            pos += 4 + n
            (n,) = u32(data, pos)  # the long name (ls -l), not used
            pos += 4 + n
            mode: int | None
            if u32(data, pos)[0] == _USUAL_FLAGS:  # what OpenSSH and most servers send
                _flags, size, _uid, _gid, mode, _atime, mtime = usual(data, pos)
                pos += _USUAL_ATTRS.size
            else:
                pos, size, mode, mtime = _attributes(data, pos)
            if pos > end:
                raise struct.error("an entry runs past the end of its reply")
            if mode is None:
                continue
            kind = mode & _S_IFMT
            if (kind != _S_IFREG and kind != _S_IFDIR) or raw in (b".", b".."):
                continue  # symbolic links and the like are never taken
            try:
                base = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.undecodable += 1
                continue
            if not hidden and is_temporary(base):
                continue
            if kind == _S_IFDIR:
                self.folders.append(base)
                continue
            name = prefix + base
            mtime_ns = mtime * 1_000_000_000
            if keep is None or keep(name, size, mtime_ns):
                self.files.append(FileInfo(name, size, mtime_ns))


#: The attributes most servers give every entry (size, owner, permissions, times), read
#: in one go: flags, size, uid, gid, permissions, atime, mtime.
_USUAL_FLAGS = _ATTR_SIZE | _ATTR_UIDGID | 0x04 | _ATTR_ACMODTIME
_USUAL_ATTRS = struct.Struct(">IQIIIII")


def _attributes(data: bytes, pos: int) -> tuple[int, int, int | None, int]:
    """An ATTRS structure at ``pos``: the position after it, size, permissions (None if
    not given) and mtime."""
    (flags,) = _U32.unpack_from(data, pos)
    pos += 4
    size, mode, mtime = 0, None, 0
    if flags & _ATTR_SIZE:
        (size,) = _U64.unpack_from(data, pos)
        pos += 8
    if flags & _ATTR_UIDGID:
        pos += 8
    if flags & 0x04:  # permissions
        (mode,) = _U32.unpack_from(data, pos)
        pos += 4
    if flags & _ATTR_ACMODTIME:
        (mtime,) = _U32.unpack_from(data, pos + 4)
        pos += 8
    if flags & _ATTR_EXTENDED:
        (pairs,) = _U32.unpack_from(data, pos)
        pos += 4
        for _pair in range(2 * pairs):
            (n,) = _U32.unpack_from(data, pos)
            pos += 4 + n
    return pos, size, mode, mtime
