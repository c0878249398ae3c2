"""A mapping of steps: mappings run one after the other as one, each step's documents the
next step's records in memory (a route and `convert` run them together); the chain is
checked (each step reads what the one before writes), and the version of what judged a
file covers every step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import FORMATS, REPO, SAMPLES
from xchange.cli import main
from xchange.config import load_config
from xchange.errors import ConfigError
from xchange.pipeline import make_pipeline

SAMPLE = SAMPLES / "order-line-shares" / "in" / "share_orders_20261121.csv"
GOLDEN = SAMPLES / "order-line-shares" / "expected" / "SHARES_share_orders_20261121.csv"


@pytest.fixture
def formats(tmp_path: Path) -> Path:
    """A copy of the shipped formats, free to be edited."""
    folder = tmp_path / "formats"
    shutil.copytree(FORMATS, folder)
    return folder


def route_of(formats: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('formats = "../formats"', f'formats = "{formats}"')
    config = tmp_path / "demo.toml"
    config.write_text(text, encoding="utf-8")
    loaded = load_config(config)
    return config, loaded.route("order-line-shares"), loaded.formats


def test_convert_runs_both_steps_as_one(formats: Path, tmp_path: Path) -> None:
    config, _, _ = route_of(formats, tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "convert",
            "--config",
            str(config),
            "--route",
            "order-line-shares",
            "-o",
            str(out),
            str(SAMPLE),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / GOLDEN.name).read_bytes() == GOLDEN.read_bytes()


def test_a_chain_whose_steps_do_not_meet_is_refused_naming_the_step(
    formats: Path, tmp_path: Path
) -> None:
    second = formats / "order-totals-to-line-shares.toml"
    second.write_text(
        second.read_text(encoding="utf-8").replace(
            'source = "order-totals"', 'source = "oms-inventory"'
        ),
        encoding="utf-8",
    )
    _, route, folder = route_of(formats, tmp_path)
    with pytest.raises(ConfigError) as raised:
        make_pipeline(route, folder)
    (problem,) = raised.value.problems
    assert "shop-order-line-shares.toml: steps[1]: order-totals-to-line-shares reads" in problem
    assert "'oms-inventory', but the step before writes 'order-totals'" in problem


def test_a_mapping_of_steps_has_no_rules_of_its_own(formats: Path, tmp_path: Path) -> None:
    top = formats / "shop-order-line-shares.toml"
    top.write_text(
        top.read_text(encoding="utf-8") + '\n[header]\nOrderNo = "order_sn"\n', encoding="utf-8"
    )
    _, route, folder = route_of(formats, tmp_path)
    with pytest.raises(ConfigError) as raised:
        make_pipeline(route, folder)
    assert any(
        "a mapping of steps has no rules of its own (found header)" in p
        for p in raised.value.problems
    )


def test_a_broken_rule_in_a_step_is_said_with_that_steps_file(
    formats: Path, tmp_path: Path
) -> None:
    first = formats / "shop-lines-to-order-totals.toml"
    first.write_text(
        first.read_text(encoding="utf-8").replace(
            "sum(goods_number * goods_price)", "sum(goods_numbr)"
        ),
        encoding="utf-8",
    )
    _, route, folder = route_of(formats, tmp_path)
    with pytest.raises(ConfigError) as raised:
        make_pipeline(route, folder)
    assert any(
        "shop-lines-to-order-totals.toml: header.total.expr" in p and "goods_numbr" in p
        for p in raised.value.problems
    ), raised.value.problems


def test_the_version_of_a_mapping_of_steps_changes_with_any_step(
    formats: Path, tmp_path: Path
) -> None:
    """A quarantined file is judged again when what judged it changes: any step, or the
    layout between the steps."""
    _, route, folder = route_of(formats, tmp_path)
    before = make_pipeline(route, folder).versions[1]  # type: ignore[union-attr]
    between = formats / "order-totals.toml"
    between.write_text(between.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert make_pipeline(route, folder).versions[1] != before  # type: ignore[union-attr]
