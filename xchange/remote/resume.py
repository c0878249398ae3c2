"""Big transfers cut short, resumed only from a prefix proven to be the same source's.

A transfer through OpenSSH's client that is cut (the connection dropped, the server gone
quiet) leaves a partial file: the hidden temporary name on the target for an upload, the
download in the scratch folder for a download. The next try sends only the rest, when,
and only when, that partial is proven to start with the very bytes of the same source;
otherwise it starts over. The proof (and its limits) is written out in docs/resume.md.

The client keeps at most :data:`WINDOW` bytes of requests in flight and sends a request
only when one is answered: every byte below ``(end of the partial) - WINDOW`` was written
and acknowledged, whatever order the server wrote the window in. A partial is therefore
cut back to that point before it is resumed (a hole the server left in its last window
is never kept).

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
#: Bytes of a partial that may be unwritten holes: the client's requests in flight.
WINDOW = (REQUESTS + 1) * REQUEST_BYTES
#: A partial shorter than this is sent again whole (resuming would save too little).
MIN_RESUME = WINDOW
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
    ``mtime_ns``) and the first ``length`` bytes kept, whose sha256 is ``sha256``."""

    endpoint: str
    name: str
    size: int
    mtime_ns: int
    length: int
    sha256: str

    @staticmethod
    def sidecar(partial: Path) -> Path:
        return partial.with_name(f"{partial.name}.resume")

    def save(self, partial: Path) -> None:
        self.sidecar(partial).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, partial: Path) -> DownloadPartial | None:
        try:
            raw = json.loads(cls.sidecar(partial).read_text(encoding="utf-8"))
            return cls(**raw)
        except (OSError, ValueError, TypeError):
            return None


def prefix_sha256(path: Path, length: int) -> str | None:
    """The sha256 of the first ``length`` bytes of ``path`` (None if it is shorter)."""
    sha = hashlib.sha256()
    left = length
    try:
        with open(path, "rb") as fh:
            while left > 0:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    return None
                sha.update(chunk)
                left -= len(chunk)
    except OSError:
        return None
    return sha.hexdigest()


def keep_download(endpoint: str, name: str, size: int, mtime_ns: int, partial: Path) -> bool:
    """Record a download cut short so that the next try can resume it: the partial cut
    back by one client window (holes the client's writes out of order may have left),
    the sha256 of what is kept. False (nothing kept) when too little arrived."""
    try:
        got = partial.stat().st_size
    except OSError:
        return False
    length = got - WINDOW
    if length < MIN_RESUME or got > size:
        return False
    os.truncate(partial, length)
    digest = prefix_sha256(partial, length)
    if digest is None:
        return False
    DownloadPartial(endpoint, name, size, mtime_ns, length, digest).save(partial)
    return True


def resumable_download(
    endpoint: str, name: str, size: int, mtime_ns: int, partial: Path
) -> tuple[int, str]:
    """How far a download into ``partial`` may resume: (bytes kept, "") when its record
    names this very remote file (endpoint, name, size and time unchanged) and the bytes
    kept still hash as recorded; else (0, why not). The partial is left holding exactly
    the bytes kept."""
    record = DownloadPartial.load(partial)
    if record is None:
        return 0, ""
    if (record.endpoint, record.name) != (endpoint, name):
        return 0, "the partial file is another file's"
    if (record.size, record.mtime_ns) != (size, mtime_ns):
        return 0, (
            f"the remote file changed since the cut ({record.size} -> {size} bytes or a new time)"
        )
    try:
        have = partial.stat().st_size
    except OSError:
        return 0, "the partial file is gone"
    if have < record.length:
        return 0, f"the partial file is shorter than recorded ({have} < {record.length})"
    if prefix_sha256(partial, record.length) != record.sha256:
        return 0, "the partial file's bytes are not the ones recorded"
    if have > record.length:
        os.truncate(partial, record.length)
    return record.length, ""


def forget_download(partial: Path) -> None:
    """Remove a download's partial record (the partial itself is the caller's)."""
    DownloadPartial.sidecar(partial).unlink(missing_ok=True)
