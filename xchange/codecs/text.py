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


#: The longest line read (CSV, NDJSON): a runaway line is refused, not held in memory.
MAX_LINE = 16 * 1024 * 1024


def split_lines(chunks: Iterable[str], origin: str = "") -> Iterator[str]:
    """Split decoded text into lines the way ``open(newline="")`` does (ends kept).

    Raises:
        DecodeError: a line longer than ``MAX_LINE`` characters.
    """
    pieces: list[str] = []  # the line in progress, kept in pieces (no quadratic copying)
    pending = 0
    count = 0
    for chunk in chunks:
        if "\n" not in chunk and "\r" not in chunk and not (pieces and pieces[-1].endswith("\r")):
            pieces.append(chunk)
            pending += len(chunk)
            if pending > MAX_LINE:
                raise DecodeError(
                    f"{origin}: line {count + 1} is longer than {MAX_LINE // (1024 * 1024)} MiB;"
                    " refused (a runaway field or a file without line breaks)"
                )
            continue
        pieces.append(chunk)
        lines = io.StringIO("".join(pieces), newline="").readlines()
        pieces, pending = [], 0
        rest = lines.pop() if lines else ""
        if rest.endswith("\n"):
            lines.append(rest)
        elif rest:
            # An incomplete last line, or one ending in "\r" that may be half of "\r\n".
            pieces, pending = [rest], len(rest)
        count += len(lines)
        yield from lines
    if pieces:
        yield "".join(pieces)
