"""A hostile workbook in a run is quarantined with its reason and its original bytes, and
the good workbook beside it is delivered."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

from click.testing import CliRunner

from tests.conftest import REPO, SAMPLES
from xchange.cli import main

SHEET = SAMPLES / "excel-kingdee-orders" / "in" / "sales_20261121.xlsx"


def with_macros(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("xl/vbaProject.bin", b"\xd0\xcf\x11\xe0 macro")
    return out.getvalue()


def test_a_workbook_with_macros_is_quarantined_and_the_good_one_delivered(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "demo.toml", tmp_path / "config" / "demo.toml")
    (tmp_path / "formats").symlink_to(REPO / "formats")
    inbox = tmp_path / "var" / "demo" / "inbox"
    inbox.mkdir(parents=True)
    shutil.copy(SHEET, inbox)
    hostile = with_macros(SHEET.read_bytes())
    (inbox / "sales_20261122.xlsx").write_bytes(hostile)
    config = str(tmp_path / "config" / "demo.toml")
    result = CliRunner().invoke(main, ["run", "--once", "--config", config])
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("excel-kingdee-orders"))
    assert "1 delivered" in line and "1 quarantined" in line, result.stdout
    delivered = sorted(p.name for p in (tmp_path / "var/demo/outbox/kingdee").iterdir())
    assert delivered == sorted(
        p.name for p in (SAMPLES / "excel-kingdee-orders" / "expected").iterdir()
    )
    quarantine = tmp_path / "var" / "demo" / "quarantine"
    [kept] = [p for p in quarantine.rglob("*sales_20261122.xlsx") if p.is_file()]
    assert kept.read_bytes() == hostile
    [report] = quarantine.rglob("*sales_20261122.xlsx.report.txt")
    assert "holds macros (xl/vbaProject.bin)" in report.read_text(encoding="utf-8")
