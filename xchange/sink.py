"""Where converted files are written before delivery: a staging folder, or memory.

Every output is hashed and counted while it is written, so delivery and the journal
know its size and sha256 without reading it again.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xchange.errors import MappingError
from xchange.names import check_plain_name
from xchange.private import private_folder


@dataclass(frozen=True, slots=True)
class Output:
    """One converted file, ready to deliver."""

    name: str
    size: int
    sha256: str
    documents: int
    #: Where the file is, as given (a ``Path`` is made when asked for: see :attr:`path`).
    where: str | os.PathLike[str] | None = None
    content: bytes | None = None

    @property
    def path(self) -> Path | None:
        """Where the file is (None: its content is in memory)."""
        return None if self.where is None else Path(self.where)

    def open(self) -> BinaryIO:
        if self.content is not None:
            return io.BytesIO(self.content)
        assert self.where is not None
        return open(self.where, "rb")

    @property
    def data(self) -> bytes:
        """The whole content (for small files and tests)."""
        if self.content is not None:
            return self.content  # bytes are immutable: no copy needed
        with self.open() as fh:
            return fh.read()


class HashingWriter:
    """A binary writer that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)


class Sink:
    """Collects outputs in ``folder`` (created and emptied by the caller), or in memory."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        #: Each output as a tuple of plain values (name, size, sha256, documents, path
        #: as text, content), which the cyclic collector stops following: a file may
        #: have a hundred thousand outputs, and an ``Output`` with its ``Path`` would be
        #: followed by every collection while the rest is converted.
        self._written: list[tuple[str, int, str, int, str | None, bytes | None]] = []
        self._outputs: list[Output] | None = None
        self._names: set[str] = set()
        self._made = False

    @property
    def outputs(self) -> list[Output]:
        """Every output written so far, in order."""
        if self._outputs is None or len(self._outputs) != len(self._written):
            # (a hundred thousand new objects that stay: the cyclic collector would follow
            # everything alive several times while they are made, and find no cycle)
            collecting = gc.isenabled()
            gc.disable()
            try:
                self._outputs = [Output(*written) for written in self._written]
            finally:
                if collecting:
                    gc.enable()
        return self._outputs

    def _add(
        self, name: str, size: int, sha: str, documents: int, path: Path | None, data: bytes | None
    ) -> None:
        self._written.append(
            (name, size, sha, documents, None if path is None else str(path), data)
        )

    @contextmanager
    def create(self, name: str, documents: list[int]) -> Iterator[HashingWriter]:
        """Write one output; ``documents`` is a one-item list the writer sets to its count.

        Raises:
            MappingError: two outputs of one source would have the same name.
        """
        self._claim(name)
        if self.folder is None:
            buf = io.BytesIO()
            writer = HashingWriter(buf)
            yield writer
            content, path = buf.getvalue(), None
        else:
            path = self._path(name)
            try:
                with open(path, "wb") as fh:
                    writer = HashingWriter(fh)
                    yield writer
            except BaseException:
                path.unlink(missing_ok=True)  # never leave a half-written output behind
                raise
            content = None
        self._add(name, writer.size, writer.sha.hexdigest(), documents[0], path, content)

    def put(self, name: str, data: bytes, documents: int) -> None:
        """Write one output whose bytes are all in hand (a small file) in one write.

        Raises:
            MappingError: two outputs of one source would have the same name.
        """
        self._claim(name)
        sha = hashlib.sha256(data).hexdigest()
        if self.folder is None:
            self._add(name, len(data), sha, documents, None, data)
            return
        path = self._where(name)
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        self._written.append((name, len(data), sha, documents, path, None))

    def _claim(self, name: str) -> None:
        check_plain_name(name)
        if name in self._names:
            raise MappingError(
                f"two outputs of this file would both be named {name!r}: "
                "the file-name template must tell documents apart"
            )
        self._names.add(name)

    def _path(self, name: str) -> Path:
        assert self.folder is not None
        if not self._made:
            private_folder(self.folder)
            self._made = True
        return self.folder / name

    def _where(self, name: str) -> str:
        """Where an output of ``name`` is written, as text (the folder made first)."""
        if not self._made:
            self._path(name)
        return os.path.join(self._folder_text, name)

    @functools.cached_property
    def _folder_text(self) -> str:
        return os.fspath(self.folder or "")

    def discard(self) -> None:
        """Forget every output (the file failed as a whole)."""
        if self.folder is not None:
            for *_, path, _ in self._written:
                if path is not None:
                    Path(path).unlink(missing_ok=True)
        self._written.clear()
        self._outputs = None
        self._names.clear()


@contextmanager
def staging_folder(root: Path, key: str) -> Iterator[Path]:
    """A private folder for one file's outputs (made when the first one is written),
    removed afterwards."""
    folder = root / key
    shutil.rmtree(folder, ignore_errors=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
