"""`xchange check` says in words what is wrong with a route's archive settings
(``source.unpack``, ``target.archive``), naming the route and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import REPO
from xchange.cli import main

DEMO = REPO / "config" / "demo.toml"
UNPACK = 'unpack = { kind = "zip", entries = "门店订单_*.csv", names = "gbk" }'


@pytest.fixture
def config(tmp_path: Path) -> Path:
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace('formats = "../formats"', f'formats = "{REPO / "formats"}"')
    path = tmp_path / "xchange.toml"
    path.write_text(text.replace('"../var/', f'"{tmp_path}/var/'), encoding="utf-8")
    return path


def check_with(config: Path, old: str, new: str) -> tuple[int, str]:
    text = config.read_text(encoding="utf-8")
    assert old in text, old
    config.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--config", str(config)])
    return result.exit_code, result.output


def test_the_shipped_archive_route_checks(config: Path) -> None:
    code, out = check_with(config, UNPACK, UNPACK)
    assert code == 0, out


@pytest.mark.parametrize(
    ("new", "said"),
    [
        (UNPACK.replace('"gbk"', '"gbk2"'), "'gbk2' is not an encoding Python knows"),
        (UNPACK.replace('"zip"', '"rar"'), "kind"),
        (UNPACK.replace(" }", ", max_ratio = 1 }"), "max_ratio"),
        (UNPACK.replace(" }", ", max_entries = 0 }"), "max_entries"),
        (UNPACK.replace(" }", ', max_total = "lots" }'), "max_total"),
        (UNPACK.replace(" }", ", password = 1 }"), "password"),
    ],
    ids=["names", "kind", "ratio", "entries", "total", "unknown-key"],
)
def test_check_refuses_unpack_settings_that_cannot_work(config: Path, new: str, said: str) -> None:
    code, out = check_with(config, UNPACK, new)
    assert code == 2
    assert "source.unpack" in out and said in out, out


@pytest.mark.parametrize(
    ("archive", "said"),
    [
        ('{ name = "WMS_{nope}.zip" }', "uses {nope}"),
        ('{ name = "WMS.zip", names = "klingon" }', "'klingon' is not an encoding"),
        ('{ name = "WMS.zip", kind = "7z" }', "kind"),
        ('{ name = "../../etc/WMS.zip" }', "does not make a plain file name"),
        ('{ name = "/tmp/WMS_{source_stem}.zip" }', "does not make a plain file name"),
        ('{ name = "out/{source_stem}.zip" }', "does not make a plain file name"),
        ('{ name = "{date:%Y/%m/%d}.zip" }', "does not make a plain file name"),
        ('{ name = "..\\\\WMS.zip" }', "does not make a plain file name"),
    ],
    ids=["field", "names", "kind", "up", "absolute", "folder", "date-slashes", "backslash"],
)
def test_check_refuses_target_archive_settings_that_cannot_work(
    config: Path, archive: str, said: str
) -> None:
    old = (
        'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml", if_exists = "fail" }\n'
        'after = { action = "archive", folder = "archive/{date:%Y%m%d}" }\n'
    )
    text = config.read_text(encoding="utf-8")
    last = text.rindex(old)
    config.write_text(
        text[:last]
        + old.replace(" }\n", f", archive = {archive} }}\n", 1)
        + text[last + len(old) :],
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert result.exit_code == 2
    assert "target.archive" in result.output and said in result.output, result.output


@pytest.mark.parametrize("pattern", ["orders_*.csv", "sales_*.xlsx", "statement_*.csv.pgp"])
def test_check_refuses_unpack_on_a_route_whose_files_are_documents(
    config: Path, pattern: str
) -> None:
    """A route that unpacks takes archives only: a pattern naming CSV, workbooks (zips
    read by the xlsx codec, not unpacked) or encrypted CSVs is said, not left to
    quarantine every file as "not a zip or gzip archive"."""
    code, out = check_with(
        config,
        'pattern = "shop_export_*.zip"',
        f'pattern = "{pattern}"',
    )
    assert code == 2
    assert f"unpack: pattern {pattern!r} takes ." in out, out
    assert "a route that unpacks takes its archives only" in out
