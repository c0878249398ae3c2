"""Format codecs: bytes in a layout's format <-> records and documents.

Each codec module is the only place its third-party parser is used: pandas in
:mod:`xchange.codecs.csv_codec`, lxml in :mod:`xchange.codecs.xml_codec`. They are
imported when first needed, so ``xchange --help`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from xchange.errors import ConfigError
from xchange.layout import Layout
from xchange.mapping import Document, Record
from xchange.report import Report


class Codec(Protocol):
    """Reads records from bytes and writes documents to bytes, per a layout."""

    def read(self, data: bytes, layout: Layout, origin: str, report: Report) -> list[Record]:
        """Parse and type-check ``data``; rule violations go to ``report``.

        Raises:
            DecodeError: the bytes are not text in the layout's encoding, or not
                well-formed in the codec's syntax.
        """
        ...

    def write(self, docs: list[Document], layout: Layout, origin: str) -> bytes:
        """Write documents in the layout's format and encoding.

        Raises:
            MappingError: a value cannot be written (e.g. missing in the encoding).
        """
        ...


_CODECS = {
    "csv": "xchange.codecs.csv_codec:CsvCodec",
    "xml": "xchange.codecs.xml_codec:XmlCodec",
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
