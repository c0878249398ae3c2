"""Bytes to text and back, in the encodings legacy systems really use.

``auto`` detection is: a byte-order mark (UTF-8, UTF-16), then strict UTF-8, then
GB18030 (a superset of GBK and GB2312). GB18030 is tried last because nearly every
UTF-8 byte sequence is also valid GB18030: trying it first would silently garble
UTF-8 files.
"""

from __future__ import annotations

import codecs

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
