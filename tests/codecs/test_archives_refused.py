"""Archives taken in: names decoded before they are split, and every hostile or broken
archive refused with a reason that names the entry and the limit."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.archive_files import gzip_bytes, set_flag, tar_gz_bytes, zip_bytes
from xchange.archives import unpack
from xchange.config import UnpackSpec
from xchange.errors import ArchiveRefused

CSV = "订单号,数量\r\nEC1,1\r\n".encode("gbk")


def spec(**values: object) -> UnpackSpec:
    return UnpackSpec.model_validate({"names": "gbk", "entries": "*.csv", **values})


#: Where the test at hand unpacks (its own temporary folder).
SCRATCH: list[Path] = []


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path) -> None:
    SCRATCH[:] = [tmp_path]


def refused(data: bytes, name: str = "shop.zip", **values: object) -> str:
    with pytest.raises(ArchiveRefused) as info:
        unpack(io.BytesIO(data), name, spec(**values), SCRATCH[0] / "refused")
    return info.value.reason


def taken(data: bytes, name: str = "shop.zip", **values: object) -> dict[str, bytes]:
    folder = SCRATCH[0] / f"taken-{len(list(SCRATCH[0].iterdir()))}"
    unpacked = unpack(io.BytesIO(data), name, spec(**values), folder)
    return {m.name: m.path.read_bytes() for m in unpacked.members}


# ------------------------------------------------------------------------------ names


def test_gbk_names_without_the_utf8_flag_are_read_as_gbk() -> None:
    data = zip_bytes([("门店订单_20261207.csv", CSV)])
    assert taken(data) == {"门店订单_20261207.csv": CSV}


def test_a_gbk_byte_0x5c_inside_a_name_is_not_a_folder() -> None:
    """誠 is D5 5C in GBK: decoded first, the name is one file, not ``\\``-split."""
    name = "门店订单_誠品店.csv"
    assert b"\\" in name.encode("gbk")
    assert taken(zip_bytes([(name, CSV)])) == {name: CSV}


def test_gbk_names_read_as_utf8_are_refused_with_a_hint() -> None:
    data = zip_bytes([("门店订单.csv", CSV)])
    assert 'names = "gbk"' in refused(data, names="utf-8")


def test_the_utf8_flag_wins_over_the_configured_names() -> None:
    data = zip_bytes([("订单.csv", CSV)], encoding="utf-8", utf8_flag=True)
    assert taken(data) == {"订单.csv": CSV}


@pytest.mark.parametrize(
    "name",
    [
        "../evil.csv",
        "orders/../../evil.csv",
        "/etc/evil.csv",
        "..\\evil.csv",
        "orders\\evil.csv",
        "C:evil.csv",
        "c:/windows/evil.csv",
        "./evil.csv",
        "a//evil.csv",
    ],
)
def test_zip_slip_names_are_refused(name: str) -> None:
    data = zip_bytes([("good.csv", CSV), (name.encode("ascii"), CSV)])
    assert "would leave its folder" in refused(data)


def test_entries_in_folders_are_taken_with_their_path() -> None:
    data = zip_bytes([("day/a.csv", CSV), ("day/", b"")])
    assert taken(data) == {"day/a.csv": CSV}


def test_a_name_twice_is_refused() -> None:
    data = zip_bytes([("a.csv", CSV), ("a.csv", CSV + b"EC2,1\r\n")], stored=True)
    assert "twice" in refused(data)


def test_an_entry_matching_neither_entries_nor_ignore_is_refused() -> None:
    data = zip_bytes([("a.csv", CSV), ("readme.txt", b"hello")])
    assert "'readme.txt' matches neither" in refused(data)
    assert taken(data, ignore=["*.txt"]) == {"a.csv": CSV}


def test_a_macs_metadata_entries_are_left_out_by_ignore_though_entries_match_them() -> None:
    """A zip made on a Mac: ``__MACOSX/._a.csv`` beside ``a.csv``. Refused until the
    route ignores them; then left out, though ``*.csv`` matches them too."""
    data = zip_bytes([("a.csv", CSV), ("__MACOSX/._a.csv", b"\x00\x05\x16\x07")])
    assert "'__MACOSX/._a.csv' matches neither" in refused(data, entries="a*.csv")
    assert taken(data, ignore=["__MACOSX/*"]) == {"a.csv": CSV}


def test_an_archive_with_nothing_to_take_is_refused() -> None:
    assert "no entry to take" in refused(zip_bytes([("readme.txt", b"x")]), ignore=["*.txt"])


# ------------------------------------------------------------------------------ limits


def test_a_zip_bomb_is_refused_by_its_ratio() -> None:
    bomb = zip_bytes([("a.csv", b"0" * (8 << 20))])
    assert len(bomb) < 20_000
    reason = refused(bomb)
    assert "max_ratio" in reason and "'a.csv'" in reason


def test_a_zip_bomb_is_refused_by_its_total() -> None:
    data = zip_bytes([("a.csv", b"1" * 3000), ("b.csv", b"2" * 3000)])
    assert "max_total" in refused(data, max_total=4000)


def test_gzip_and_tar_gz_bombs_are_refused_by_the_bytes_that_come_out() -> None:
    """gzip and tar.gz declare no sizes to check first: what comes out is counted."""
    bomb = gzip_bytes(b"0" * (8 << 20))
    assert len(bomb) < 20_000
    assert "max_ratio" in refused(bomb, name="a.csv.gz", kind="gzip")
    both = tar_gz_bytes([("a.csv", b"1" * 3000), ("b.csv", b"2" * 3000)])
    assert "max_total" in refused(both, name="shop.tar.gz", kind="tar.gz", max_total=4000)


def test_a_fault_of_this_machine_while_unpacking_is_no_verdict_on_the_archive(
    tmp_path: Path,
) -> None:
    """Entries that cannot be written here (the scratch folder unusable: a full disk, an
    I/O error) raise the machine's error: the archive waits, it is not refused."""
    (tmp_path / "not-a-folder").write_bytes(b"")
    data = zip_bytes([("a.csv", CSV)])
    with pytest.raises(OSError) as info:
        unpack(io.BytesIO(data), "shop.zip", spec(), tmp_path / "not-a-folder" / "in")
    assert not isinstance(info.value, ArchiveRefused) and info.value.errno is not None


def test_declared_sizes_that_lie_do_not_let_a_bomb_through() -> None:
    """The central directory says 10 bytes; its local header says otherwise, what comes
    out is counted, and the CRC of the 10 bytes read does not match: refused either way."""
    bomb = bytearray(zip_bytes([("a.csv", b"0" * (8 << 20))]))
    central = bomb.find(b"PK\x01\x02")
    bomb[central + 24 : central + 28] = (10).to_bytes(4, "little")
    reason = refused(bytes(bomb))
    assert "disagrees with the central directory" in reason


def test_too_many_entries_are_refused() -> None:
    data = zip_bytes([(f"{i:03d}.csv", CSV) for i in range(12)])
    assert "max_entries" in refused(data, max_entries=10)


def test_too_many_entries_in_a_tar_are_refused_as_they_come() -> None:
    data = tar_gz_bytes([(f"{i:03d}.csv", CSV) for i in range(12)])
    assert "max_entries" in refused(data, "x.tar.gz", max_entries=10)


# ------------------------------------------------------------------------------ damage


def test_a_truncated_zip_is_refused() -> None:
    data = zip_bytes([("a.csv", CSV * 50), ("b.csv", CSV * 50)])
    assert "corrupt" in refused(data[: len(data) // 2])


def test_a_truncated_gzip_is_refused() -> None:
    data = gzip_bytes(CSV * 200)
    assert "truncated" in refused(data[: len(data) - 12], "orders.csv.gz")


def test_a_bad_crc_is_refused() -> None:
    data = bytearray(zip_bytes([("a.csv", CSV)], stored=True))
    at = data.find(b"EC1")
    data[at] = ord("X")
    assert "CRC" in refused(bytes(data))


def test_a_gzip_with_a_bad_crc_is_refused() -> None:
    data = bytearray(gzip_bytes(CSV))
    data[-8] ^= 0xFF
    assert "corrupt" in refused(bytes(data), "orders.csv.gz")


def test_an_encrypted_entry_is_refused() -> None:
    data = set_flag(zip_bytes([("a.csv", CSV)]), 0x1)
    assert "'a.csv' is encrypted" in refused(data)


def test_a_tar_with_a_symlink_is_refused() -> None:
    data = tar_gz_bytes([("a.csv", CSV)], links=[("b.csv", "/etc/passwd")])
    assert "'b.csv' is a link" in refused(data, "x.tar.gz")


def test_a_tar_with_a_slip_name_is_refused() -> None:
    data = tar_gz_bytes([("../a.csv", CSV)])
    assert "would leave its folder" in refused(data, "x.tar.gz")


def test_a_zip_symlink_entry_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("a.csv")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    assert "is a link" in refused(buf.getvalue())


def test_a_nested_archive_is_refused() -> None:
    inner = zip_bytes([("a.csv", CSV)])
    assert "nested" in refused(zip_bytes([("a.csv", inner)]))


def test_workbooks_in_a_zip_are_taken_as_they_are_where_the_route_reads_xlsx() -> None:
    """A workbook is a zip: on a route that reads xlsx, a zip entry is a workbook, taken
    whole (never unpacked again); a gzip entry is still a nested archive."""
    book = zip_bytes([("xl/workbook.xml", b"<workbook/>")], encoding="utf-8")
    data = zip_bytes([("sales_1.xlsx", book)])
    folder = SCRATCH[0] / "workbooks"
    unpacked = unpack(io.BytesIO(data), "week.zip", spec(entries="*.xlsx"), folder, workbooks=True)
    assert [(m.name, m.path.read_bytes()) for m in unpacked.members] == [("sales_1.xlsx", book)]
    gz = zip_bytes([("sales_1.xlsx", gzip_bytes(CSV))])
    with pytest.raises(ArchiveRefused, match="nested"):
        unpack(io.BytesIO(gz), "week.zip", spec(entries="*.xlsx"), folder / "2", workbooks=True)


def test_bytes_that_are_no_archive_are_refused() -> None:
    assert "not a zip or gzip" in refused(CSV)


def test_a_kind_other_than_the_route_says_is_refused() -> None:
    assert 'kind = "zip"' in refused(gzip_bytes(CSV), "a.csv.gz", kind="zip")


# ------------------------------------------------------------------------------ gzip, tar


def test_a_gzip_is_one_entry_named_as_the_file_without_gz() -> None:
    assert taken(gzip_bytes(CSV), "orders_1.csv.gz") == {"orders_1.csv": CSV}


def test_a_tar_gz_is_told_by_its_content_and_read_entry_by_entry() -> None:
    data = tar_gz_bytes([("b.csv", CSV), ("a.csv", CSV + b"EC2,1\r\n")])
    assert list(taken(data, "day.tgz")) == ["a.csv", "b.csv"]
    assert taken(data, "day.tar.gz", kind="tar.gz")["b.csv"] == CSV


# ---------------------------------------------------------------- disagreeing, colliding


def patched(data: bytes, signature: bytes, at: int, value: int) -> bytes:
    """``data`` (a zip) with the 4-byte field ``at`` bytes into its first record with
    ``signature`` set to ``value``."""
    out = bytearray(data)
    start = out.find(signature) + at
    out[start : start + 4] = value.to_bytes(4, "little")
    return bytes(out)


LOCAL, CENTRAL = b"PK\x03\x04", b"PK\x01\x02"


@pytest.mark.parametrize(
    ("where", "at", "value", "said"),
    [
        (LOCAL, 22, 3, "disagrees with the central directory"),  # size unpacked
        (LOCAL, 18, 3, "disagrees with the central directory"),  # size packed
        (LOCAL, 14, 1234, "disagrees with the central directory"),  # CRC
        (CENTRAL, 24, 300, "disagrees with the central directory"),
        (CENTRAL, 24, 3, "disagrees with the central directory"),
        (CENTRAL, 20, 300, "runs into the next entry or the central directory"),
    ],
    ids=["local-size", "local-packed", "local-crc", "size-larger", "size-smaller", "packed"],
)
def test_a_zip_whose_local_headers_and_directory_disagree_is_refused(
    where: bytes, at: int, value: int, said: str
) -> None:
    """Streaming unzippers believe the local headers, zipfile the central directory: a
    zip that would read differently by tool (though its CRC holds) is refused."""
    data = zip_bytes([("a.csv", CSV), ("b.csv", CSV * 3)])
    assert taken(data) == {"a.csv": CSV, "b.csv": CSV * 3}
    assert said in refused(patched(data, where, at, value))


def test_a_zip_whose_utf8_flag_differs_between_local_header_and_directory_is_refused() -> None:
    """The flag says how the name's bytes are read: set in the directory only, the same
    bytes are another name to a tool that reads the local header."""
    data = bytearray(zip_bytes([("a.csv", CSV)]))
    central = data.find(CENTRAL)
    data[central + 9] |= 0x08  # (bit 11 of the flags: their second byte's 0x08)
    assert "disagrees with the central directory" in refused(bytes(data))


def test_a_zip_whose_local_and_central_names_differ_is_refused() -> None:
    data = zip_bytes([("a.csv", CSV)])
    central = data.find(CENTRAL)
    renamed = data[:central] + data[central:].replace(b"a.csv", b"b.csv")
    assert "'b.csv' and header b'a.csv' differ" in refused(renamed)


def test_entries_sharing_their_compressed_data_are_refused_as_an_overlapping_bomb() -> None:
    """A second directory record pointing at the first entry's data (the overlapping
    zip bomb: one kernel read by every record) is refused before anything is read."""
    data = zip_bytes([("a.csv", CSV * 1000)])
    central = data.find(CENTRAL)
    end = data.find(b"PK\x05\x06")
    record = data[central:end]
    twin = record.replace(b"a.csv", b"b.csv")
    eocd = bytearray(data[end:])
    eocd[8:10] = (2).to_bytes(2, "little")
    eocd[10:12] = (2).to_bytes(2, "little")
    eocd[12:16] = (2 * len(record)).to_bytes(4, "little")
    bomb = data[:end] + twin + bytes(eocd)
    assert "runs into the next entry" in refused(bomb)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("A.csv", "a.csv"),
        ("\u00e9.csv", "e\u0301.csv"),  # é, composed and decomposed
        ("a.csv", "a.csv."),
        ("a.csv", "a.csv "),
        ("Day/a.csv", "day/a.csv"),
    ],
    ids=["case", "nfc-nfd", "trailing-dot", "trailing-space", "folder-case"],
)
def test_entries_that_would_be_one_file_on_windows_or_macos_are_refused(
    first: str, second: str
) -> None:
    """Unpacked, entries are numbered files (none could overwrite another); but names
    one only by case, normalisation or a trailing dot would meet as outputs named from
    their source on a Windows or macOS partner: refused, naming both."""
    data = zip_bytes([(first, b"one\n"), (second, b"two\n")], encoding="utf-8", utf8_flag=True)
    reason = refused(data, entries="*")
    assert f"entries {first!r} and {second!r} differ only by case" in reason


def test_a_gzip_with_trailing_garbage_is_refused_and_two_members_are_read_as_gunzip_does() -> None:
    one, two = gzip_bytes(CSV), gzip_bytes(b"EC2,1\r\n")
    assert "Not a gzipped file" in refused(one + b"garbage!", "orders.csv.gz")
    assert taken(one + b"\0" * 16, "orders.csv.gz") == {"orders.csv": CSV}  # zero padding
    # Members run together are one file (RFC 1952; gunzip -c gives the same bytes).
    assert taken(one + two, "orders.csv.gz") == {"orders.csv": CSV + b"EC2,1\r\n"}


def tar_of(*members: tarfile.TarInfo, data: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return raw.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.mark.parametrize(
    ("kind", "link"),
    [(tarfile.LNKTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "a.csv"), (tarfile.FIFOTYPE, "")],
    ids=["hard-link-out", "hard-link-in", "fifo"],
)
def test_a_tar_with_a_hard_link_or_a_fifo_is_refused(kind: bytes, link: str) -> None:
    data = tar_of(member("a.csv", size=len(CSV)), member("b.csv", kind, link=link), data=CSV)
    assert "'b.csv' is a link or a device" in refused(gzip_bytes(data), "x.tar.gz")


def test_a_tar_gz_is_read_to_its_end_crc_checked_nothing_after_the_tar() -> None:
    """tarfile stops at the tar's end block; the gzip after it is read to its end all
    the same: a damaged byte in the data (tar has no checksum of its own; caught by the
    gzip's CRC), a cut trailer, or a second tar run on after the first, are refused."""
    tar = tar_of(member("a.csv", size=len(b"EC1,100.00\n")), data=b"EC1,100.00\n")
    packed = gzip.compress(tar, compresslevel=0, mtime=0)  # (stored: one byte changed)
    assert taken(packed, "x.tar.gz") == {"a.csv": b"EC1,100.00\n"}
    damaged = packed.replace(b"EC1,100.00", b"EC1,900.00")
    assert "CRC check failed" in refused(damaged, "x.tar.gz")
    assert "truncated" in refused(packed[:-8], "x.tar.gz")
    hidden = tar_of(member("hidden.csv", size=4), data=b"bad\n")
    assert "data after the end of the tar" in refused(gzip_bytes(tar + hidden), "x.tar.gz")


class _Unseekable(io.RawIOBase):
    """A stream zipfile cannot seek back in: it writes data descriptors."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def test_a_zip_with_data_descriptors_is_taken() -> None:
    """Zips written as a stream (by Java, by phones, by zipfile to a pipe) carry CRC and
    sizes after the data, the local header's left zero: not a disagreement."""
    out = _Unseekable()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (("a.csv", CSV), ("b.csv", CSV * 3)):
            with archive.open(name, "w") as entry:
                entry.write(data)
    data = bytes(out.data)
    assert int.from_bytes(data[6:8], "little") & 0x08  # data descriptors indeed
    assert taken(data) == {"a.csv": CSV, "b.csv": CSV * 3}


def _stored_zip(
    entries: list[tuple[bytes, bytes]], listed: set[bytes], prefix: bytes = b""
) -> bytes:
    """A zip of stored entries, written by hand: its central directory lists only the
    names in ``listed`` (the others are local entries no directory names)."""
    import struct
    import zlib

    out = bytearray(prefix)
    central = bytearray()
    for name, data in entries:
        offset = len(out)
        crc = zlib.crc32(data)
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, len(data), len(data), len(name), 0
        )
        out += name + data
        if name in listed:
            central += struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, len(data), len(data), len(name),
                0, 0, 0, 0, 0, offset,
            ) + name  # fmt: skip
    start = len(out)
    out += central
    count = len(listed)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), start, 0)
    return bytes(out)


def test_a_local_entry_the_central_directory_hides_is_refused() -> None:
    """Streaming unzippers read local headers; xchange reads the central directory: an
    entry only one of them sees would be delivered by one tool and not the other."""
    entries = [(b"a.csv", CSV), (b"hidden.csv", b"evil\n"), (b"b.csv", CSV)]
    reason = refused(_stored_zip(entries, {b"a.csv", b"b.csv"}))
    assert "followed by" in reason and "the central directory does not list" in reason
    # The same entries, all listed, are taken.
    assert set(taken(_stored_zip(entries[::2], {b"a.csv", b"b.csv"}))) == {"a.csv", "b.csv"}


def test_data_before_the_first_entry_is_refused() -> None:
    hidden = _stored_zip([(b"x.csv", CSV)], set())[:-22]  # a local entry, no directory
    reason = refused(_stored_zip([(b"a.csv", CSV)], {b"a.csv"}, prefix=hidden))
    assert "bytes before the first entry" in reason
