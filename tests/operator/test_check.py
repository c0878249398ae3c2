"""`xchange check` refuses what would fail at run time, naming the file and key, and
says nothing of secrets but that they are not written there."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import REPO
from xchange.cli import main

DEMO = REPO / "config" / "demo.toml"


@pytest.fixture
def formats(tmp_path: Path) -> Path:
    """A copy of formats/ to break, and the demo configuration pointing at it."""
    import shutil

    folder = tmp_path / "formats"
    shutil.copytree(REPO / "formats", folder)
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace('formats = "../formats"', f'formats = "{folder}"').replace(
        '"../var/', f'"{tmp_path}/var/'
    )
    (tmp_path / "xchange.toml").write_text(text, encoding="utf-8")
    return folder


def check(folder: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", "--config", str(folder.parent / "xchange.toml")])
    return result.exit_code, result.output


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_check_refuses_a_name_placeholder_nothing_provides(formats: Path) -> None:
    """`ERP_{Foo}.csv` would quarantine every file at run time as unsafe-name: check says so
    first, naming the route and key and what the template may use."""
    edit(formats.parent / "xchange.toml", "SAL_SaleOrder_{FBillNo}.json", "ERP_{Foo}.csv")
    code, out = check(formats)
    assert code == 2
    assert "route oms-kingdee-orders: target.name: 'ERP_{Foo}.csv' uses {Foo}" in out
    assert "always: source_name, source_stem, date" in out


def test_check_refuses_a_target_field_without_a_rule(formats: Path) -> None:
    edit(
        formats / "shop-to-wms-outbound.toml", 'Remark = { from = "postscript", trim = true }\n', ""
    )
    code, out = check(formats)
    assert code == 2
    assert "shop-to-wms-outbound.toml: header: target field 'Remark'" in out
    assert "has no rule" in out


def test_check_refuses_a_source_field_the_layout_does_not_have(formats: Path) -> None:
    edit(formats / "shop-to-wms-outbound.toml", 'SkuName = "goods_name"', 'SkuName = "goods_title"')
    code, out = check(formats)
    assert code == 2
    assert "lines.SkuName: source layout" in out and "has no field 'goods_title'" in out


def test_check_refuses_a_boolean_written_as_text(formats: Path) -> None:
    edit(formats / "shop-to-wms-outbound.toml", 'output = "per-document"', 'flatten = "yes"')
    code, out = check(formats)
    assert code == 2
    assert "shop-to-wms-outbound.toml: flatten: expected true or false" in out


def test_check_refuses_a_table_that_is_not_defined(formats: Path) -> None:
    edit(formats / "shop-to-wms-outbound.toml", 'table = "warehouses"', 'table = "depots"')
    code, out = check(formats)
    assert code == 2
    assert "header.WarehouseCode.table: no table 'depots'" in out


def test_the_secret_hint_is_given_only_for_keys_that_look_like_secrets(formats: Path) -> None:
    edit(formats / "shop-to-wms-outbound.toml", 'output = "per-document"', 'colour = "blue"')
    code, out = check(formats)
    assert code == 2
    assert "colour: unknown key" in out and "password_env" not in out
    edit(formats / "shop-to-wms-outbound.toml", 'colour = "blue"', 'password = "hunter22"')
    code, out = check(formats)
    assert "password: unknown key (secrets are not written here" in out
    assert "hunter22" not in out


def test_check_refuses_a_manifest_column_of_a_total_the_mapping_does_not_declare(
    formats: Path,
) -> None:
    """A control file with `totals.tax` on a mapping whose totals are amount, lines, pieces
    and prices, and a name template with a placeholder nothing provides."""
    config = formats.parent / "xchange.toml"
    edit(config, 'columns = ["name", "documents", "size", "sha256"]', 'columns = ["totals.tax"]')
    edit(config, 'name = "{source_stem}.ctl"', 'name = "{stem}.ctl"')
    code, out = check(formats)
    assert code == 2
    assert (
        "route shop-orders-3pl: target.manifest.columns: 'totals.tax': the mapping "
        "declares no total 'tax' (totals: amount, lines, pieces, prices)"
    ) in out
    assert "route shop-orders-3pl: target.manifest.name: '{stem}.ctl' uses {stem}" in out


def test_check_refuses_manifest_columns_it_does_not_know(formats: Path) -> None:
    config = formats.parent / "xchange.toml"
    edit(config, 'columns = ["name", "documents", "size", "sha256"]', 'columns = ["name", "crc"]')
    code, out = check(formats)
    assert code == 2
    assert "routes[12].target.manifest: columns: 'crc' is not one of name, size" in out


def test_check_names_an_import_template_that_is_missing_or_not_a_workbook(
    formats: Path,
) -> None:
    """An xlsx layout whose ``template`` does not exist, or is no workbook: said by check
    with the file's path, before any JSON is taken and quarantined for it."""
    layout = formats / "kingdee-sale-order-import.toml"
    edit(layout, "templates/kingdee-sale-order-import.xlsx", "templates/nope.xlsx")
    code, out = check(formats)
    assert code == 2
    assert "xlsx.template" in out and "templates/nope.xlsx: No such file or directory" in out
    (formats / "templates" / "nope.xlsx").write_text("order,amount\n", encoding="utf-8")
    code, out = check(formats)
    assert code == 2
    assert "templates/nope.xlsx: not an Excel workbook" in out, out
