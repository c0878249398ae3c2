"""Format codecs: bytes in a layout's format <-> records and documents.

Each codec module is the only place its third-party parser is used: pandas in
:mod:`xchange.codecs.csv_codec`, lxml in :mod:`xchange.codecs.xml_codec`. They are
imported when first needed, so ``xchange --help`` stays quick.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar, runtime_checkable

from xchange.errors import ConfigError
from xchange.layout import Layout
from xchange.mapping import Document, Record
from xchange.report import Report


class Codec(Protocol):
    """Reads records from a stream and writes documents to a stream, per a layout."""

    def records(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Record]:
        """Parse and type-check the stream one record at a time; broken rules go to
        ``report``, the encoding used to ``report.encoding``.

        Raises:
            DecodeError: the bytes are not text in the layout's encoding, or not
                well-formed in the codec's syntax.
        """
        ...

    def write(self, docs: Iterable[Document], layout: Layout, origin: str, out: Any) -> int:
        """Write documents to ``out`` in the layout's format and encoding; return how many.

        Raises:
            MappingError: a value cannot be written (e.g. missing in the encoding).
        """
        ...


@dataclass(slots=True)
class Chunk:
    """Some consecutive records of a flat file as columns of raw text: the input of the
    columnar fast path (:mod:`xchange.codecs.columnar`)."""

    #: Field key -> the text of each record ("" or None: no value); a key that is not
    #: there has no value in any record.
    columns: Mapping[str, Sequence[str | None]]
    #: How many records.
    size: int
    #: The index of the first record in the file.
    offset: int
    #: Whether every value was read without a problem (else the row path does the chunk).
    clean: bool
    #: The row path for the same records: typed records, problems sent to the report.
    rows: Callable[[Report], Iterator[Record]]
    #: The same records as the fast reading holds them (Arrow columns, for
    #: :mod:`xchange.codecs.arrow`), or None.
    native: Any = None


class StartOver(Exception):
    """The fast reading cannot vouch for this file (quotes, a broken rule, a problem of
    structure...): read it again from the start the standard way, which reports what is
    wrong exactly as it always has."""


@runtime_checkable
class Columns(Protocol):
    """A codec that can give a flat file's records a chunk at a time, as columns."""

    def chunks(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Chunk]:
        """The records as :class:`Chunk` s; problems of the file as a whole (its header,
        its structure) go to ``report``, and then no chunk follows.

        Raises:
            DecodeError: as :meth:`Codec.records`.
        """
        ...


@runtime_checkable
class FastColumns(Protocol):
    """A codec that can also read a flat file the fast way (:meth:`fast_chunks`)."""

    def fast_chunks(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Chunk]:
        """The records as :class:`Chunk` s, like ``chunks``, for files the fast reading
        can vouch for.

        Raises:
            StartOver: the file must be read the standard way (maybe after chunks were
                given: whatever was made of them must be thrown away).
        """
        ...


@runtime_checkable
class OneDocument(Protocol):
    """A codec that can give the bytes of a file holding one document at once (a file
    per document: no stream to set up for each)."""

    def document(self, doc: Document, layout: Layout, origin: str) -> bytes:
        """What :meth:`Codec.write` writes for ``[doc]``.

        Raises:
            MappingError: as :meth:`Codec.write`.
        """
        ...


T = TypeVar("T")


def per_layout(make: Callable[[Layout], T]) -> Callable[[Layout], T]:
    """``make(layout)``, made once per layout (what a codec derives from a layout to read
    or write each of its files: layouts are frozen, so it never goes stale)."""
    cache: dict[int, tuple[Layout, T]] = {}

    @functools.wraps(make)
    def made(layout: Layout) -> T:
        known = cache.get(id(layout))
        if known is None or known[0] is not layout:
            if len(cache) > 256:
                cache.clear()
            known = cache[id(layout)] = (layout, make(layout))
        return known[1]

    return made


_CODECS = {
    "csv": "xchange.codecs.csv_codec:CsvCodec",
    "xml": "xchange.codecs.xml_codec:XmlCodec",
    "xlsx": "xchange.codecs.xlsx_codec:XlsxCodec",
    "json": "xchange.codecs.json_codec:JsonCodec",
}


def codec_for(layout: Layout) -> Codec:
    """The codec a layout names."""
    target = _CODECS.get(layout.codec)
    if target is None:
        raise ConfigError(
            [
                f"{layout.source_file}: codec: {layout.codec!r} is not available (have: "
                f"{', '.join(sorted(_CODECS))})"
            ]
        )
    module, _, cls = target.partition(":")
    codec: Codec = getattr(importlib.import_module(module), cls)()
    return codec
