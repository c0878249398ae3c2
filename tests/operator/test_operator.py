"""The operator's loop: see what failed, fix it, send it again; nothing lost or doubled."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from tests.daemons import SAMPLE, drop_with_new_channel, private_formats
from xchange.cli import main


def cli(exchange: Exchange, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(exchange.config)])


def test_new_channel_code_quarantine_fix_and_retry_all(exchange: Exchange) -> None:
    """Story 2: an unknown channel code is quarantined; after adding it to the value table,
    `quarantine retry --all --route` delivers every order, once."""
    formats = private_formats(exchange)
    drop_with_new_channel(exchange)
    first = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert first.exit_code == 1
    assert not (exchange.inbox / "orders_20261121.csv").exists()

    listed = cli(exchange, "quarantine", "list")
    assert listed.exit_code == 0
    assert "orders_20261121.csv" in listed.stdout and "validation" in listed.stdout
    assert "'抖音' is not in value table 'channels'" in listed.stdout
    shown = cli(exchange, "quarantine", "show", "1")
    assert "line 4: field Channel: table" in shown.stdout
    assert "original:" in shown.stdout and "mapping:     shop-to-wms-outbound@" in shown.stdout

    mapping = formats / "shop-to-wms-outbound.toml"
    mapping.write_text(
        mapping.read_text(encoding="utf-8").replace(
            '"拼多多" = "PDD"', '"拼多多" = "PDD"\n"抖音" = "DY"'
        ),
        encoding="utf-8",
    )
    retried = cli(exchange, "quarantine", "retry", "--all", "--route", "shop-orders")
    assert retried.exit_code == 0, retried.output
    assert "#1 orders_20261121.csv: delivered" in retried.stdout
    delivered = sorted(p.name for p in exchange.outbox.iterdir())
    assert len(delivered) == 3
    assert b"<Channel>DY</Channel>" in (exchange.outbox / delivered[1]).read_bytes()
    assert "(nothing in quarantine)" in cli(exchange, "quarantine", "list").stdout
    kept = exchange.quarantine / "shop-orders" / "resolved" / "000001_orders_20261121.csv"
    assert kept.exists()  # the original stays on record

    again = cli(exchange, "quarantine", "retry", "1")
    assert again.exit_code == 1
    assert "delivered already" in again.stderr
    history = json.loads(cli(exchange, "journal", "show", "1", "--json").stdout)["history"]
    assert [h["to_state"] for h in history] == [
        "processing",
        "quarantined",
        "processing",
        "delivering",
        "delivered",
        "archived",  # the kept copy, archived as the source would have been
    ]


def edit_kept_copy(exchange: Exchange, file_id: int, new: bytes) -> None:
    """What the operator does to a quarantined file: mend its kept copy by hand."""
    shown = json.loads(cli(exchange, "journal", "show", str(file_id), "--json").stdout)
    Path(shown["quarantine_path"]).write_bytes(new)


def test_retry_of_an_edited_copy_names_the_record_that_was_delivered(
    exchange: Exchange,
) -> None:
    """The kept copy of #1 is mended by hand: its content is new, so it is delivered on a
    record of its own, #2. `quarantine retry 1` says so (before: "#1 ...: delivered", and
    `journal show 1` then said #1 was dropped)."""
    drop_with_new_channel(exchange)
    assert cli(exchange, "run", "--once").exit_code == 1
    edit_kept_copy(exchange, 1, SAMPLE.read_bytes())
    retried = cli(exchange, "quarantine", "retry", "1")
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.startswith("#1 orders_20261121.csv (as #2): delivered ("), retried.stdout
    assert json.loads(cli(exchange, "journal", "show", "1", "--json").stdout)["state"] == "dropped"
    shown = json.loads(cli(exchange, "journal", "show", "2", "--json").stdout)
    assert shown["state"] == "archived" and len(shown["outputs"]) == 3


def test_retry_of_an_edited_copy_delivered_already_is_no_failure(exchange: Exchange) -> None:
    """The mended copy turns out to be a file delivered already (#1): nothing is sent, the
    quarantine is empty, and the command says which record has it and exits 0."""
    exchange.drop_sample()
    assert cli(exchange, "run", "--once").exit_code == 0
    data = SAMPLE.read_bytes().decode("gbk").replace("京东", "抖音").encode("gbk")
    (exchange.inbox / "orders_20261122.csv").write_bytes(data)
    assert cli(exchange, "run", "--once").exit_code == 1
    edit_kept_copy(exchange, 2, SAMPLE.read_bytes())
    retried = cli(exchange, "quarantine", "retry", "2")
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.startswith(
        "#2 orders_20261122.csv (as #1): the edited copy's content was delivered already as #1"
    ), retried.stdout
    assert "(nothing in quarantine)" in cli(exchange, "quarantine", "list").stdout
    assert len(list(exchange.outbox.iterdir())) == 3


def test_drop_gives_a_file_up_and_keeps_the_record(exchange: Exchange) -> None:
    """`quarantine drop` deletes the kept copy; the journal still says what happened."""
    drop_with_new_channel(exchange)
    CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    dropped = cli(exchange, "quarantine", "drop", "1")
    assert dropped.exit_code == 0
    assert not any((exchange.quarantine / "shop-orders").glob("000001_*"))
    listed = json.loads(cli(exchange, "journal", "list", "--json").stdout)
    assert listed["state"] == "dropped"
    # The record no longer points at the copy that was deleted.
    shown = json.loads(cli(exchange, "journal", "show", "1", "--json").stdout)
    assert shown["quarantine_path"] is None


def test_bad_ids_and_arguments_are_clear_errors(exchange: Exchange) -> None:
    """Unknown IDs, files not in quarantine and missing arguments exit non-zero with words."""
    missing = cli(exchange, "quarantine", "show", "42")
    assert missing.exit_code == 1 and "no journal record with id 42" in missing.stderr
    assert cli(exchange, "quarantine", "retry").exit_code == 2
    exchange.drop_sample()
    CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    not_q = cli(exchange, "quarantine", "drop", "1")
    assert not_q.exit_code == 1 and "is not in quarantine (it is archived)" in not_q.stderr


def test_reprocess_force_sends_a_delivered_file_again(exchange: Exchange) -> None:
    """`reprocess --force` sends an archived file's outputs again, overwriting."""
    exchange.drop_sample()
    CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    target = next(exchange.outbox.iterdir())
    target.write_bytes(b"damaged by the receiver")
    refused = cli(exchange, "reprocess", "1")
    assert refused.exit_code == 1 and "--force" in refused.stderr
    forced = cli(exchange, "reprocess", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert target.read_bytes() == (SAMPLES / "shop-orders" / "expected" / target.name).read_bytes()


def test_journal_list_filters_by_name_and_time(exchange: Exchange) -> None:
    """--name takes a shell pattern; --until excludes newer records."""
    exchange.drop_sample()
    CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert "orders_20261121.csv" in cli(exchange, "journal", "list", "--name", "orders_*").stdout
    assert "orders_20261121.csv" not in cli(exchange, "journal", "list", "--name", "x*").stdout
    old = cli(exchange, "journal", "list", "--until", "2020-01-01")
    assert "orders_20261121.csv" not in old.stdout
    pruned = cli(exchange, "journal", "prune", "--older-than", "30")
    assert "pruned 0 delivered record(s)" in pruned.stdout


def test_business_key_already_delivered_is_skipped_and_reported(exchange: Exchange) -> None:
    """Story 4: a re-export carrying an order already sent is skipped for that order only."""
    exchange.write_config(route_extra='dedupe_key = "OrderNo"')
    exchange.drop_sample()
    CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    lines = SAMPLE.read_bytes().decode("gbk").split("\r\n")
    new_order = lines[3].replace("EC20261121002", "EC20261121009")
    reexport = "\r\n".join([lines[0], lines[1], lines[2], new_order, ""]).encode("gbk")
    (exchange.inbox / "orders_20261121_2.csv").write_bytes(reexport)
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert result.exit_code == 0, result.output
    assert "1 delivered (1 document)" in result.stdout
    # Named with the file that delivered it, and when.
    assert "skipped (already delivered): orders_20261121_2.csv (#2): EC20261121001 (in #1 " in (
        result.stdout
    )
    assert re.search(
        r"EC20261121001 \(in #1 orders_20261121\.csv, \d{4}-\d\d-\d\d\)", result.stdout
    )
    assert (exchange.outbox / "WMS_OUT_20261121_EC20261121009.xml").exists()
    assert len(list(exchange.outbox.iterdir())) == 4
