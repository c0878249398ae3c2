"""Archives made byte by byte for tests: zips whose entry names are written in any code
page (as Windows tools write them, without the UTF-8 flag) or are hostile, gzips and tars.

Python's zipfile writes names only as ASCII or UTF-8, so each entry is written under a
placeholder of the same length, whose bytes are then replaced by the name's own.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

#: The time stamped on every entry (the archives come out the same each time).
STAMP = (2026, 12, 7, 8, 30, 0)


def zip_bytes(
    entries: list[tuple[str | bytes, bytes]],
    *,
    encoding: str = "gbk",
    utf8_flag: bool = False,
    stored: bool = False,
    windows: bool = True,
) -> bytes:
    """A zip holding ``entries`` (name, data): a str name is encoded in ``encoding``, a
    bytes name written as it is; the UTF-8 flag only if ``utf8_flag``."""
    raw_names = [n if isinstance(n, bytes) else n.encode(encoding) for n, _ in entries]
    placeholders = [
        (chr(ord("A") + i % 26) + chr(ord("a") + i // 26 % 26)) * (len(raw) // 2)
        + "Q" * (len(raw) % 2)
        for i, raw in enumerate(raw_names)
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for placeholder, (_, data) in zip(placeholders, entries, strict=True):
            info = zipfile.ZipInfo(placeholder, STAMP)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            info.create_system = 0 if windows else 3
            if not windows:
                info.external_attr = 0o100644 << 16
            archive.writestr(info, data)
    data = buf.getvalue()
    for placeholder, raw in zip(placeholders, raw_names, strict=True):
        marker = placeholder.encode("ascii")
        assert data.count(marker) == 2, "placeholder not unique"
        data = data.replace(marker, raw)
    if utf8_flag:
        data = set_flag(data, 0x800)
    return data


def set_flag(data: bytes, bit: int) -> bytes:
    """``data`` (a zip) with general-purpose flag ``bit`` set on every entry."""
    out = bytearray(data)
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := out.find(signature, start)) >= 0:
            flags = int.from_bytes(out[found + at : found + at + 2], "little") | bit
            out[found + at : found + at + 2] = flags.to_bytes(2, "little")
            start = found + 4
    return bytes(out)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def tar_gz_bytes(
    files: list[tuple[str, bytes]],
    *,
    links: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> bytes:
    """A tar.gz of regular ``files`` (name, data) and symbolic ``links`` (name, target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buf.getvalue()


#: The shipped zipped exchange's route settings (as config/demo.toml has them).
SHOP_UNPACK = '{ kind = "zip", entries = "门店订单_*.csv", names = "gbk" }'


def archive_route(
    config: Path, unpack: str | None = SHOP_UNPACK, archive: str | None = None
) -> None:
    """Make the scratch exchange's route (tests.conftest.Exchange) take zips of shop
    orders (``unpack``), and/or deliver its outputs zipped (``archive``: the inline table
    of ``target.archive``)."""
    text = config.read_text(encoding="utf-8")
    if unpack is not None:
        old = 'source = { endpoint = "shop-drop", pattern = "orders_*.csv" }'
        assert old in text
        text = text.replace(
            old,
            'source = { endpoint = "shop-drop", pattern = ["*.zip", "*.gz", "*.tgz"], '
            f"unpack = {unpack} }}",
        )
    if archive is not None:
        old = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'
        assert old in text
        text = text.replace(
            old, f'name = "WMS_OUT_{{OrderDate}}_{{OrderNo}}.xml", archive = {archive} }}'
        )
    config.write_text(text, encoding="utf-8")
