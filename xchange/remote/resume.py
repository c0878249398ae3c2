"""Big transfers cut short, resumed only from a prefix proven to be the same source's.

A transfer through OpenSSH's client that is cut (the connection dropped, the server gone
quiet) leaves a partial file: the hidden temporary name on the target for an upload, the
download in the scratch folder for a download. The next try sends only the rest, when,
and only when, that partial is proven to start with the very bytes of the same source;
otherwise it starts over. The proof (and its limits) is written out in docs/resume.md.

A server works on the requests of one file in the order they arrive, a few at a time at
most (OpenSSH's sftp-server and ProFTPD one at a time, rclone's a handful): the bytes of a
partial can only be missing (a hole) within its last few requests. A partial is therefore
cut back by :data:`MARGIN` (32 requests) before it is resumed, and the bytes right below
that point are compared (uploads) or hashed (downloads): a hole is never kept.

Records: an upload's (the temporary name, the content's sha256 and size, the bytes
acknowledged so far, the partial's size and time once the cut settled) is kept by
:class:`Partials`, one small JSON file per transfer in the private scratch folder (or in
this process's memory without one); a download's is a sidecar beside its partial (the
remote file's name, size and time, the length kept and the sha256 of those bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xchange.private import private_folder

#: Requests OpenSSH's client keeps in flight (its ``-R``), and the bytes of each.
REQUESTS = 128
REQUEST_BYTES = 32 * 1024
#: Bytes the client has in flight: everything a window below its position in the file is
#: acknowledged.
WINDOW = (REQUESTS + 1) * REQUEST_BYTES
#: Bytes at the end of a partial that are never kept: where a server working on several
#: requests at once may have left a hole.
MARGIN = 32 * REQUEST_BYTES
#: A partial shorter than this is sent again whole (resuming would save too little).
MIN_RESUME = WINDOW
#: Seconds a cut partial's size and time must stay the same before they are noted (the
#: server writes what it had received first).
SETTLE = 0.1
#: Bytes compared, at the end of the kept prefix and at one place inside it, before an
#: upload is resumed (read back from the server).
SPOT_BYTES = 256 * 1024


@dataclass
class UploadPartial:
    """What is known of one upload's partial temporary file."""

    #: The endpoint and the temporary file's path on it.
    endpoint: str
    temp: str
    #: The content being sent.
    sha256: str
    size: int
    #: Bytes the server acknowledged so far (the partial is at least this long).
    confirmed: int = 0
    #: The partial's size and time (seconds) as the cut left it, once it settled; None
    #: when it could not be seen (the network was down).
    left_size: int | None = None
    left_mtime: int | None = None

    def key(self) -> str:
        return hashlib.sha256(f"{self.endpoint}\0{self.temp}".encode()).hexdigest()[:24]

    def saw(self, position: int) -> None:
        """The client's position in the local file: everything a window below it is
        acknowledged."""
        self.confirmed = max(self.confirmed, position - WINDOW)


_MEMORY: dict[str, dict[str, Any]] = {}
_MEMORY_LOCK = threading.Lock()


class Partials:
    """The records of uploads cut short: one JSON file each in ``folder`` (private), or
    this process's memory when there is no folder."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder

    def load(self, endpoint: str, temp: str) -> UploadPartial | None:
        key = UploadPartial(endpoint, temp, "", 0).key()
        if self.folder is None:
            with _MEMORY_LOCK:
                raw = _MEMORY.get(key)
        else:
            try:
                raw = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
        try:
            found = UploadPartial(**raw) if isinstance(raw, dict) else None
        except TypeError:
            return None
        if found is None or (found.endpoint, found.temp) != (endpoint, temp):
            return None
        return found

    def save(self, record: UploadPartial) -> None:
        key = record.key()
        if self.folder is None:
            with _MEMORY_LOCK:
                _MEMORY[key] = asdict(record)
            return
        private_folder(self.folder)
        path = self.folder / f"{key}.json"
        temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        temp.write_text(json.dumps(asdict(record)), encoding="utf-8")
        os.replace(temp, path)

    def drop(self, record: UploadPartial) -> None:
        key = record.key()
        if self.folder is None:
            with _MEMORY_LOCK:
                _MEMORY.pop(key, None)
            return
        (self.folder / f"{key}.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class DownloadPartial:
    """A download cut short: the remote file as it was (``endpoint``, ``name``, ``size``,
    ``mtime_ns``) and the bytes kept, as segments ``(end, sha256 of the bytes from the
    previous end)`` (a resumed download that is cut again hashes only what it added);
    ``seen`` is the partial's (size, mtime_ns, inode, ctime_ns) once written: while it
    is unchanged, its bytes are not hashed again."""

    endpoint: str
    name: str
    size: int
    mtime_ns: int
    segments: tuple[tuple[int, str], ...]
    seen: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def length(self) -> int:
        return self.segments[-1][0] if self.segments else 0

    @staticmethod
    def sidecar(partial: Path) -> Path:
        return partial.with_name(f"{partial.name}.resume")

    def save(self, partial: Path) -> None:
        self.sidecar(partial).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, partial: Path) -> DownloadPartial | None:
        try:
            raw = json.loads(cls.sidecar(partial).read_text(encoding="utf-8"))
            segments = tuple((int(end), str(sha)) for end, sha in raw.pop("segments"))
            size, mtime, inode, ctime = (int(v) for v in raw.pop("seen"))
            return cls(**raw, segments=segments, seen=(size, mtime, inode, ctime))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None


def _seen(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def range_sha256(path: Path, start: int, end: int) -> str | None:
    """The sha256 of bytes ``start`` to ``end`` of ``path`` (None if it is shorter)."""
    sha = hashlib.sha256()
    left = end - start
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            while left > 0:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    return None
                sha.update(chunk)
                left -= len(chunk)
    except OSError:
        return None
    return sha.hexdigest()


def keep_download(
    endpoint: str,
    name: str,
    size: int,
    mtime_ns: int,
    partial: Path,
    earlier: DownloadPartial | None = None,
) -> bool:
    """Record a download cut short so that the next try can resume it: the partial cut
    back by :data:`MARGIN` (holes writes out of order may have left), the sha256
    of what is kept (of what was added to ``earlier``'s proven bytes, when this try had
    resumed from them). False (nothing kept) when too little arrived."""
    try:
        got = partial.stat().st_size
    except OSError:
        return False
    segments = earlier.segments if earlier is not None else ()
    before = segments[-1][0] if segments else 0
    length = got - MARGIN
    if got > size or max(length, before) < MIN_RESUME:
        return False
    if length > before:
        os.truncate(partial, length)
        digest = range_sha256(partial, before, length)
        if digest is None:
            return False
        segments = (*segments, (length, digest))
    else:
        os.truncate(partial, before)
    DownloadPartial(endpoint, name, size, mtime_ns, segments, _seen(partial)).save(partial)
    return True


def resumable_download(
    endpoint: str, name: str, size: int, mtime_ns: int, partial: Path
) -> tuple[DownloadPartial | None, str]:
    """The record a download into ``partial`` may resume from, and "", when it names
    this very remote file (endpoint, name, size and time unchanged) and the bytes kept
    are still the ones recorded (the partial untouched since, or its bytes hashing as
    recorded); else None and why not ("" when there is no record). The partial is left
    holding exactly the bytes kept."""
    record = DownloadPartial.load(partial)
    if record is None or not record.segments:
        return None, ""
    if (record.endpoint, record.name) != (endpoint, name):
        return None, "the partial file is another file's"
    if (record.size, record.mtime_ns) != (size, mtime_ns):
        return None, (
            f"the remote file changed since the cut ({record.size} -> {size} bytes or a new time)"
        )
    try:
        seen = _seen(partial)
    except OSError:
        return None, "the partial file is gone"
    if seen != record.seen:
        if seen[0] < record.length:
            return None, f"the partial file is shorter than recorded ({seen[0]} bytes)"
        start = 0
        for end, digest in record.segments:
            if range_sha256(partial, start, end) != digest:
                return None, "the partial file's bytes are not the ones recorded"
            start = end
        if seen[0] > record.length:
            os.truncate(partial, record.length)
    return record, ""


def forget_download(partial: Path) -> None:
    """Remove a download's partial record (the partial itself is the caller's)."""
    DownloadPartial.sidecar(partial).unlink(missing_ok=True)
