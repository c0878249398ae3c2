"""Bytes to text and back, in the encodings legacy systems really use.

``auto`` detection is: a byte-order mark (UTF-8, UTF-16), then strict UTF-8, then
GB18030 (a superset of GBK and GB2312). GB18030 is tried last because nearly every
UTF-8 byte sequence is also valid GB18030: trying it first would silently garble
UTF-8 files.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from xchange.errors import DecodeError, MappingError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode(data: bytes, encoding: str, origin: str) -> tuple[str, str]:
    """Decode ``data``; return the text and the encoding actually used.

    Raises:
        DecodeError: naming the line and the offending bytes.
    """
    if encoding.lower() == "auto":
        for bom, name in _BOMS:
            if data.startswith(bom):
                return _strict(data, name, origin), name
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return _strict(data, "gb18030", origin), "gb18030"
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    return _strict(data, encoding, origin), encoding


def _strict(data: bytes, encoding: str, origin: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise DecodeError(
            f"{origin}: line {line}: bytes {bad} are not valid {encoding} "
            f"(the file is not in the encoding its layout declares)"
        ) from None
    except LookupError:
        raise DecodeError(f"{origin}: unknown encoding {encoding!r}") from None


def encode(text: str, encoding: str, origin: str) -> bytes:
    """Encode for output; a character the target encoding lacks is a mapping error."""
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start : exc.end]
        line = exc.object.count("\n", 0, exc.start) + 1
        raise MappingError(
            f"{origin}: line {line}: character {char!r} (U+{ord(char[0]):04X}) "
            f"cannot be written in {encoding}"
        ) from None


CHUNK = 1 << 20


def _bom_encoding(head: bytes) -> str | None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def resolve_encoding(stream: BinaryIO, encoding: str, origin: str) -> str:
    """The encoding to read ``stream`` with (``auto`` detected by a full strict pass)."""
    start = stream.tell()
    head = stream.read(4)
    stream.seek(start)
    if encoding.lower() != "auto":
        if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and head.startswith(
            codecs.BOM_UTF8
        ):
            return "utf-8-sig"
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DecodeError(f"{origin}: unknown encoding {encoding!r}") from None
        return encoding
    found = _bom_encoding(head)
    if found:
        return found
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        while chunk := stream.read(CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
        return "utf-8"
    except UnicodeDecodeError:
        return "gb18030"
    finally:
        stream.seek(start)


def decoded_chunks(stream: BinaryIO, encoding: str, origin: str) -> Iterator[str]:
    """Decode a stream strictly, chunk by chunk; an error names its line.

    Raises:
        DecodeError: bytes that are not valid in ``encoding``.
    """
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    lines_before = 0
    while True:
        chunk = stream.read(CHUNK)
        final = not chunk
        try:
            text = decoder.decode(chunk, final=final)
        except UnicodeDecodeError as exc:
            # exc.object is this chunk, preceded by any bytes the decoder held back
            # (an incomplete character, so never a newline): count lines up to the error.
            line = lines_before + exc.object.count(b"\n", 0, exc.start) + 1
            bad = exc.object[exc.start : exc.end].hex(" ")
            raise DecodeError(
                f"{origin}: line {line}: bytes {bad} are not valid {encoding} "
                f"(the file is not in the encoding its layout declares)"
            ) from None
        lines_before += text.count("\n")
        if text:
            yield text
        if final:
            return


class Encoder:
    """Incremental encoding for output (a BOM, if any, only once)."""

    def __init__(self, encoding: str, origin: str) -> None:
        self._enc = codecs.getincrementalencoder(encoding)("strict")
        self.encoding = encoding
        self.origin = origin

    def __call__(self, text: str, final: bool = False) -> bytes:
        try:
            return bytes(self._enc.encode(text, final))
        except UnicodeEncodeError:
            # Locate the character with the one-shot encoder for a precise message.
            encode(text, self.encoding.replace("-sig", ""), self.origin)
            raise  # pragma: no cover - encode() raised already


def split_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Split decoded text into lines the way ``open(newline="")`` does (ends kept)."""
    rest = ""
    for chunk in chunks:
        lines = io.StringIO(rest + chunk, newline="").readlines()
        rest = lines.pop() if lines else ""
        if rest.endswith("\n"):
            lines.append(rest)
            rest = ""
        # Otherwise the last line is incomplete, or ends in "\r" that may be half of "\r\n".
        yield from lines
    if rest:
        yield rest
