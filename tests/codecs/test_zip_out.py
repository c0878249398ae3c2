"""Outputs zipped on the way out: any names and bytes come back as written, names in the
code page the partner reads, and the same outputs at the same claim time give the same
bytes (a run again after a crash writes the same archive)."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchange.archives import zipped
from xchange.config import ArchiveSpec
from xchange.errors import MappingError
from xchange.sink import Output

WHEN = datetime(2026, 12, 7, 8, 30, 17)


def output(name: str, data: bytes, documents: int = 1) -> Output:
    return Output(name, len(data), hashlib.sha256(data).hexdigest(), documents, content=data)


def make(tmp: Path, files: dict[str, bytes], names: str = "utf-8", when: datetime = WHEN) -> bytes:
    spec = ArchiveSpec(name="out.zip", names=names)
    folder = tmp / f"z{len(list(tmp.iterdir())) if tmp.exists() else 0}"
    made = zipped([output(n, d) for n, d in files.items()], spec, "out.zip", when, folder)
    data = (folder / "out.zip").read_bytes()
    assert (made.size, made.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    return data


NAMES = st.text(
    alphabet=st.sampled_from("abcXYZ019_-.门店订单誠品衆"), min_size=1, max_size=20
).filter(lambda n: n not in (".", "..") and n != "out.zip")


@settings(max_examples=60, deadline=None)
@given(files=st.dictionaries(NAMES, st.binary(max_size=3000), min_size=1, max_size=6))
def test_any_outputs_come_back_as_written_and_the_same_twice(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]
) -> None:
    tmp = tmp_path_factory.mktemp("zip")
    for names in ("utf-8", "gbk"):
        data = make(tmp, files, names)
        assert make(tmp, files, names) == data  # deterministic
        with zipfile.ZipFile(
            io.BytesIO(data), metadata_encoding=None if names == "utf-8" else names
        ) as archive:
            assert archive.testzip() is None
            assert [i.filename for i in archive.infolist()] == sorted(files)
            assert {n: archive.read(n) for n in files} == files
            assert {i.date_time for i in archive.infolist()} == {(2026, 12, 7, 8, 30, 16)}


def test_gbk_names_are_written_without_the_utf8_flag(tmp_path: Path) -> None:
    data = make(tmp_path, {"门店订单_誠品店.csv": b"x"}, "gbk")
    assert "门店订单_誠品店.csv".encode("gbk") in data
    (info,) = zipfile.ZipFile(io.BytesIO(data), metadata_encoding="gbk").infolist()
    assert info.flag_bits & 0x800 == 0 and info.filename == "门店订单_誠品店.csv"


def test_utf8_names_carry_the_utf8_flag(tmp_path: Path) -> None:
    (info,) = zipfile.ZipFile(io.BytesIO(make(tmp_path, {"订单.xml": b"x"}))).infolist()
    assert info.flag_bits & 0x800 and info.filename == "订单.xml"


def test_a_name_the_code_page_cannot_write_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot be written in gbk"):
        make(tmp_path, {"naïve_😀.csv": b"x"}, "gbk")


def test_another_claim_time_gives_another_archive_the_same_time_the_same(tmp_path: Path) -> None:
    files = {"a.xml": b"<a/>", "b.xml": b"<b/>"}
    assert make(tmp_path, files) != make(tmp_path, files, when=datetime(2026, 12, 8, 9, 0))


def test_info_zips_unzip_reads_it(tmp_path: Path) -> None:
    """Another implementation than Python's reads the archive and checks every CRC."""
    if shutil.which("unzip") is None:
        pytest.fail("unzip is not installed: run tests/run-all.sh, which installs it")
    (tmp_path / "z").mkdir()
    path = tmp_path / "out.zip"
    path.write_bytes(make(tmp_path / "z", {"a.xml": b"<a/>" * 1000, "b.xml": b"<b/>"}))
    tested = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout
    assert "No errors detected" in tested.stdout
