"""Awkward drop folders: files that vanish or shrink, empty files, symlinks, odd names,
very wide rows. Each gets a clear outcome; the run goes on; nothing is lost."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.remote import FileInfo
from xchange.results import SKIPPED
from xchange.runner import Runner

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])


def runner_for(exchange: Exchange) -> Runner:
    config = load_config(exchange.config)
    return Runner(config, open_journal(config.journal))


def test_a_file_removed_after_listing_is_skipped_quietly(exchange: Exchange) -> None:
    """Listed, then taken back by its producer: no error, no alert, nothing delivered."""
    runner = runner_for(exchange)
    route = runner.config.routes[0]
    result = runner.process(route, FileInfo("orders_gone.csv", 874, 1))
    assert result.outcome == SKIPPED and result.error is None
    assert runner.journal.query() == []


def test_a_file_truncated_after_listing_is_looked_at_again(exchange: Exchange) -> None:
    """A size different from the listing's means the file changed: it is not taken now."""
    exchange.drop_sample()
    runner = runner_for(exchange)
    route = runner.config.routes[0]
    st = (exchange.inbox / "orders_20261121.csv").stat()
    (exchange.inbox / "orders_20261121.csv").write_bytes(SAMPLE.read_bytes()[:100])
    result = runner.process(route, FileInfo("orders_20261121.csv", st.st_size, st.st_mtime_ns))
    assert result.outcome == SKIPPED
    assert runner.journal.query() == []
    assert (exchange.inbox / "orders_20261121.csv").exists()


def test_an_empty_file_is_quarantined_with_a_reason(exchange: Exchange) -> None:
    """A zero-byte export is a failed export: quarantined, said plainly."""
    (exchange.inbox / "orders_empty.csv").write_bytes(b"")
    result = run(exchange)
    assert result.exit_code == 1
    assert "the file is empty" in result.stdout


def test_a_header_only_file_is_delivered_as_nothing_to_do(exchange: Exchange) -> None:
    """A header without rows (no orders today) is fine: no output, source archived."""
    header = SAMPLE.read_bytes().split(b"\r\n")[0] + b"\r\n"
    (exchange.inbox / "orders_none.csv").write_bytes(header)
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert "1 delivered (0 documents)" in result.stdout
    assert (exchange.inbox / "archive" / "orders_none.csv").exists()


def test_a_symlink_in_the_drop_folder_is_not_followed(exchange: Exchange, tmp_path: Path) -> None:
    """A link pointing outside the drop folder is ignored: its target is never read or moved."""
    outside = tmp_path / "outside.csv"
    outside.write_bytes(SAMPLE.read_bytes())
    os.symlink(outside, exchange.inbox / "orders_link.csv")
    result = run(exchange)
    assert result.exit_code == 0
    assert "0 delivered" in result.stdout
    assert outside.read_bytes() == SAMPLE.read_bytes()
    assert (exchange.inbox / "orders_link.csv").is_symlink()


def test_names_with_spaces_cjk_and_dots_are_handled(exchange: Exchange) -> None:
    """`orders_ 十一月 ..csv` goes through and is archived under its own name."""
    name = "orders_ 十一月 ..csv"
    (exchange.inbox / name).write_bytes(SAMPLE.read_bytes())
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert (exchange.inbox / "archive" / name).exists()
    assert len(list(exchange.outbox.iterdir())) == 3


def test_a_row_with_100000_columns_is_a_reported_problem(exchange: Exchange) -> None:
    """A pathological row is reported with its line, in bounded time, and quarantined."""
    lines = SAMPLE.read_bytes().split(b"\r\n")
    wide = lines[1] + b"," * 100_000
    (exchange.inbox / "orders_wide.csv").write_bytes(b"\r\n".join([lines[0], wide, b""]))
    result = run(exchange)
    assert result.exit_code == 1
    assert "line 2: field (row): columns: ragged row: expected 15 fields, found 100015" in (
        result.stdout
    )


def test_a_single_huge_csv_line_is_refused_in_bounded_memory(exchange: Exchange) -> None:
    """A 20 MB line (a runaway field) is refused with its line number, not swallowed."""
    lines = SAMPLE.read_bytes().split(b"\r\n")
    huge = lines[1].replace(b"\xc7\xeb\xd6\xdc\xc4\xa9\xcb\xcd\xbb\xf5", b"x" * 20_000_000)
    (exchange.inbox / "orders_huge.csv").write_bytes(b"\r\n".join([lines[0], huge, b""]))
    result = run(exchange)
    assert result.exit_code == 1
    assert "line 2 is longer than 16 MiB; refused" in result.stdout


def test_an_xml_text_node_beyond_the_parser_limit_is_refused() -> None:
    """libxml2's limits stay on (huge_tree off): a 20 MB text node is a reported error."""
    import pytest

    from xchange.codecs.xml_codec import check_well_formed
    from xchange.errors import DecodeError

    data = b"<a>" + b"x" * 20_000_000 + b"</a>"
    with pytest.raises(DecodeError, match="line 1"):
        check_well_formed(data, "huge.xml")


def test_a_look_limited_to_named_files_takes_only_those(exchange: Exchange) -> None:
    """Event-driven looks (the daemon's watched folders) touch only the named files and the
    ones already held; the rest wait for a full look."""
    runner = runner_for(exchange)
    route = runner.config.routes[0]
    data = SAMPLE.read_bytes()
    (exchange.inbox / "orders_a.csv").write_bytes(data)
    (exchange.inbox / "orders_b.csv").write_bytes(data.replace(b"EC2026112100", b"EC2026112101"))
    named = runner.run_route(route, only={"orders_a.csv", "no_such.csv", ".hidden.csv"})
    assert [f.source for f in named.files] == ["orders_a.csv"]
    assert (exchange.inbox / "orders_b.csv").exists()
    full = runner.run_route(route)
    assert [f.source for f in full.files] == ["orders_b.csv"]
