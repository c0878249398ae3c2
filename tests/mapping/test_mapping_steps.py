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


def problems_after(formats: Path, tmp_path: Path, file: str, old: str, new: str) -> list[str]:
    """What building the route says once ``old`` is ``new`` in the formats' ``file``."""
    path = formats / file
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(old, new) if old else text + new, encoding="utf-8")
    _, route, folder = route_of(formats, tmp_path)
    with pytest.raises(ConfigError) as raised:
        make_pipeline(route, folder)
    return raised.value.problems


def test_a_chain_whose_steps_do_not_meet_is_refused_naming_the_step(
    formats: Path, tmp_path: Path
) -> None:
    (problem,) = problems_after(
        formats,
        tmp_path,
        "order-totals-to-line-shares.toml",
        'source = "order-totals"',
        'source = "oms-inventory"',
    )
    assert "shop-order-line-shares.toml: steps[1]: order-totals-to-line-shares reads" in problem
    assert "'oms-inventory', but the step before writes 'order-totals'" in problem


def test_a_mapping_of_steps_has_no_rules_of_its_own(formats: Path, tmp_path: Path) -> None:
    problems = problems_after(
        formats, tmp_path, "shop-order-line-shares.toml", "", '\n[header]\nOrderNo = "order_sn"\n'
    )
    assert any("a mapping of steps has no rules of its own (found header)" in p for p in problems)


def test_a_broken_rule_in_a_step_is_said_with_that_steps_file(
    formats: Path, tmp_path: Path
) -> None:
    problems = problems_after(
        formats,
        tmp_path,
        "shop-lines-to-order-totals.toml",
        "sum(goods_number * goods_price)",
        "sum(goods_numbr)",
    )
    assert any(
        "shop-lines-to-order-totals.toml: header.total.expr" in p and "goods_numbr" in p
        for p in problems
    ), problems


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
