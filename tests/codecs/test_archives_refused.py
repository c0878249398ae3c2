"""Archives taken in: names decoded before they are split, and every hostile or broken
archive refused with a reason that names the entry and the limit."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

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


def test_declared_sizes_that_lie_do_not_let_a_bomb_through() -> None:
    """The central directory says 10 bytes; what comes out is counted, and the CRC of
    the 10 bytes read does not match: refused either way."""
    bomb = bytearray(zip_bytes([("a.csv", b"0" * (8 << 20))]))
    central = bomb.find(b"PK\x01\x02")
    bomb[central + 24 : central + 28] = (10).to_bytes(4, "little")
    reason = refused(bytes(bomb))
    assert "corrupt" in reason or "max_ratio" in reason


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
