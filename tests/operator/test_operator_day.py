"""The operator's day: commands that only read work without secrets, exit codes and
messages say what happened, nothing in a drop folder is ignored without a word."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import REPO, SAMPLES, Exchange
from xchange.cli import main

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def cli(exchange: Exchange, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(exchange.config)], env=env)


def sftp_target_needing_a_password(exchange: Exchange) -> None:
    """The route's target on an SFTP server whose password is in XCHANGE_WMS_PASSWORD."""
    exchange.write_config(
        target='[endpoints.wms-outbox]\ntype = "sftp"\nhost = "127.0.0.1"\nport = 1\n'
        f'user = "wms"\npath = "/in"\npassword_env = "XCHANGE_WMS_PASSWORD"\n'
        f'known_hosts = "{exchange.root / "known_hosts"}"\n'
    )


def test_commands_that_only_read_work_without_the_secrets(exchange: Exchange) -> None:
    """status, journal list, quarantine list and check need no password: they work in a
    shell where XCHANGE_WMS_PASSWORD is not set (check notes it)."""
    sftp_target_needing_a_password(exchange)
    for args in (("status",), ("journal", "list"), ("quarantine", "list")):
        result = cli(exchange, *args)
        assert result.exit_code == 0, (args, result.output)
    checked = cli(exchange, "check")
    assert checked.exit_code == 0, checked.output
    assert "note: " in checked.stdout and "XCHANGE_WMS_PASSWORD is not set" in checked.stdout


def test_commands_that_connect_name_the_missing_variable(exchange: Exchange) -> None:
    """run --once and check --remote need the password: exit 2 naming file, key and
    variable."""
    sftp_target_needing_a_password(exchange)
    exchange.drop_sample()
    for args in (("run", "--once"), ("check", "--remote")):
        result = cli(exchange, *args)
        assert result.exit_code == 2, (args, result.output)
        assert (
            f"{exchange.config}: endpoints.wms-outbox.password_env: environment variable "
            "XCHANGE_WMS_PASSWORD is not set"
        ) in result.stderr
    assert (exchange.inbox / SAMPLE.name).exists()


def test_a_configuration_of_copy_routes_needs_no_formats_folder(
    exchange: Exchange, tmp_path: Path
) -> None:
    """Only routes with layouts or a mapping need `formats`: copy routes run without it."""
    exchange.config.write_text(
        f"""
[journal]
path = "{exchange.journal}"

[quarantine]
path = "{exchange.quarantine}"

[endpoints.drop]
type = "local"
path = "{exchange.inbox}"

[endpoints.out]
type = "local"
path = "{exchange.outbox}"

[[routes]]
name = "copy-all"
source = {{ endpoint = "drop", pattern = "*.csv" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}" }}
ready = {{ settle = 0 }}
""",
        encoding="utf-8",
    )
    shutil.copy(SAMPLE, exchange.inbox / SAMPLE.name)
    assert cli(exchange, "check").exit_code == 0
    ran = cli(exchange, "run", "--once")
    assert ran.exit_code == 0, ran.output
    assert (exchange.outbox / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()
    listed = json.loads(cli(exchange, "journal", "list", "--json").stdout)
    assert listed["state"] == "archived"


PASSWORD = {"XCHANGE_WMS_PASSWORD": "not-used"}


def waiting_file(exchange: Exchange) -> None:
    """A file whose target refused the connection: it waits an hour for its next try."""
    sftp_target_needing_a_password(exchange)
    text = exchange.config.read_text().replace("later = 0", "later = 3600")
    exchange.config.write_text(text)
    exchange.drop_sample()
    first = cli(exchange, "run", "--once", env=PASSWORD)
    assert first.exit_code == 3, first.output
    second = cli(exchange, "run", "--once", env=PASSWORD)
    assert second.exit_code == 3 and "1 waiting" in second.stdout


def test_a_waiting_file_says_until_when_and_retry_makes_it_due_now(exchange: Exchange) -> None:
    """run --once and status say when a waiting file is tried next (local time);
    `xchange retry` makes it due now, and the next run tries it at once."""
    from xchange.config import load_config
    from xchange.journal import open_journal

    waiting_file(exchange)
    journal = open_journal(load_config(exchange.config, env=PASSWORD).journal)
    (record,) = journal.query()
    journal.close()
    assert record.next_retry_at is not None
    when = record.next_retry_at.astimezone().strftime("%H:%M:%S")
    again = cli(exchange, "run", "--once", env=PASSWORD)
    assert f"waiting: {SAMPLE.name} (#1): next try at {when}" in again.stdout
    assert "`xchange retry` makes it due now" in again.stdout
    status = cli(exchange, "status")
    assert f"retrying: #1 {SAMPLE.name}: next try " in status.stdout and when in status.stdout
    retried = cli(exchange, "retry")
    assert retried.exit_code == 0, retried.output
    assert f"#1 shop-orders {SAMPLE.name}: due now" in retried.stdout
    tried = cli(exchange, "run", "--once", env=PASSWORD)
    assert "1 retry-later" in tried.stdout and "1 waiting" not in tried.stdout
    assert cli(exchange, "retry", "--route", "nosuch").exit_code == 2
    assert "no journal record with id 7" in cli(exchange, "retry", "7").stderr


def test_reprocess_says_what_it_does_with_a_waiting_and_a_delivered_file(
    exchange: Exchange,
) -> None:
    """A file waiting in the drop folder is taken from there at once by `reprocess`; a
    delivered file is left alone with the reason and the way to send it again."""
    waiting_file(exchange)
    exchange.write_config()  # the target fixed: a local folder
    taken = cli(exchange, "reprocess", "1")
    assert taken.exit_code == 0, taken.output
    assert f"#1 {SAMPLE.name}: delivered (" in taken.stdout
    assert len(list(exchange.outbox.iterdir())) == 3
    assert not (exchange.inbox / SAMPLE.name).exists()  # archived as any delivered file
    again = cli(exchange, "reprocess", "1")
    assert again.exit_code == 1
    assert f"#1 {SAMPLE.name}: delivered already (archived " in again.stderr
    assert "nothing sent. --force sends it again from its archived copy" in again.stderr
    assert "retry-later" not in again.output and "cause=format" not in again.output


def test_unknown_route_names_are_refused_with_the_known_ones(exchange: Exchange) -> None:
    """run --once, journal list, quarantine list/retry and retry with a route that does
    not exist: exit 2 naming the routes there are, no traceback."""
    for args in (
        ("run", "--once", "--route", "nosuch"),
        ("journal", "list", "--route", "nosuch"),
        ("quarantine", "list", "--route", "nosuch"),
        ("quarantine", "retry", "--all", "--route", "nosuch"),
        ("retry", "--route", "nosuch"),
    ):
        result = cli(exchange, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "no route named 'nosuch' (known: shop-orders)" in result.stderr, args
        assert "Traceback" not in result.output


def test_status_lists_files_no_route_takes_with_a_hint_for_case(exchange: Exchange) -> None:
    """Files in a drop folder that match no route are listed by status, with a hint when a
    pattern differs only by case; files a route takes and hidden files are not."""
    exchange.drop_sample()
    (exchange.inbox / "ORDERS_1.CSV").write_bytes(b"x")
    (exchange.inbox / "notes.txt").write_bytes(b"y")
    (exchange.inbox / ".hidden").write_bytes(b"z")
    status = cli(exchange, "status")
    assert status.exit_code == 0, status.output
    lines = [line for line in status.stdout.splitlines() if "not taken by any route" in line]
    assert len(lines) == 2
    assert "ORDERS_1.CSV (1 bytes): route shop-orders's pattern 'orders_*.csv' differs" in lines[0]
    assert "notes.txt (1 bytes): no route's pattern matches ('orders_*.csv')" in lines[1]
    as_json = json.loads(cli(exchange, "status", "--json").stdout)
    assert [s["path"] for s in as_json["not_taken"]] == ["ORDERS_1.CSV", "notes.txt"]


def test_an_edited_quarantined_copy_is_new_content_linked_to_the_old_record(
    exchange: Exchange,
) -> None:
    """The operator fixes the quarantined copy by hand: `quarantine retry` delivers it as a
    new record (its own sha256, 'edited copy of #1'), the old record is dropped with
    'replaced by its edited copy #2', the copy is archived as the source would be, the
    record points at the copy's resolved path, and the log counts its bytes."""
    from xchange.config import load_config
    from xchange.journal import State, open_journal

    data = SAMPLE.read_bytes().decode("gbk").replace("京东", "抖音").encode("gbk")
    (exchange.inbox / SAMPLE.name).write_bytes(data)
    assert cli(exchange, "run", "--once").exit_code == 1
    kept = exchange.quarantine / "shop-orders" / f"000001_{SAMPLE.name}"
    fixed = SAMPLE.read_bytes()  # the operator puts the known channel back
    kept.write_bytes(fixed)
    retried = CliRunner().invoke(
        main,
        ["--log-format", "json", "quarantine", "retry", "1", "--config", str(exchange.config)],
    )
    assert retried.exit_code == 0, retried.output
    assert f"#1 {SAMPLE.name} (as #2): delivered" in retried.stdout
    events = [json.loads(line) for line in retried.stderr.splitlines() if line.startswith("{")]
    (edited,) = [e for e in events if e["event"] == "file.edited_copy"]
    assert edited["replaces"] == 1 and edited["file_id"] == 2
    (delivered,) = [e for e in events if e["event"] == "file.delivered"]
    assert delivered["bytes"] == len(fixed)
    journal = open_journal(load_config(exchange.config).journal)
    try:
        old, new = journal.get(1), journal.get(2)
        assert old is not None and new is not None
        assert old.state == State.DROPPED
        assert new.state == State.ARCHIVED
        import hashlib

        assert new.sha256 == hashlib.sha256(fixed).hexdigest() != old.sha256
        assert new.quarantine_path == str(
            exchange.quarantine / "shop-orders" / "resolved" / f"000001_{SAMPLE.name}"
        )
        assert any("replaced by its edited copy #2" in (t.note or "") for t in journal.history(1))
        assert any("edited copy of #1" in (t.note or "") for t in journal.history(2))
    finally:
        journal.close()
    assert (exchange.inbox / "archive" / SAMPLE.name).read_bytes() == fixed
    assert len(list(exchange.outbox.iterdir())) == 3


def run_with(exchange: Exchange, *args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_log_options_work_before_and_after_the_command(exchange: Exchange) -> None:
    """--log-format, --log-timezone and -v are taken on the group and on the command;
    the command's win."""
    config = str(exchange.config)
    exchange.drop_sample()
    after = run_with(exchange, "run", "--once", "--config", config, "--log-format", "json")
    assert after.exit_code == 0, after.output
    events = [json.loads(x) for x in after.stderr.splitlines() if x.startswith("{")]
    assert any(e["event"] == "file.delivered" for e in events)
    assert all(e["timestamp"].endswith("Z") for e in events)  # JSON stays UTC
    idle = run_with(exchange, "run", "--once", "--config", config, "--log-format", "json", "-v")
    events = [json.loads(x) for x in idle.stderr.splitlines() if x.startswith("{")]
    assert any(e["level"] == "debug" for e in events)  # -v after the command
    overridden = run_with(
        exchange, "--log-format", "json", "status", "--config", config, "--log-format", "console"
    )
    assert overridden.exit_code == 0 and not overridden.stderr.lstrip().startswith("{")


def test_console_logs_show_local_time_in_the_chosen_zone(exchange: Exchange) -> None:
    """The console format shows times in the time zone asked for, with its offset."""
    exchange.drop_sample()
    result = run_with(
        exchange,
        "--log-format",
        "console",
        "--log-timezone",
        "Asia/Shanghai",
        "run",
        "--once",
        "--config",
        str(exchange.config),
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if "file.delivered" in x)
    assert "+08:00" in line and "Z " not in line
    bad = run_with(
        exchange, "--log-timezone", "Mars/Base", "status", "--config", str(exchange.config)
    )
    assert bad.exit_code == 2 and "is not a time zone" in bad.output


def test_levels_match_what_a_person_must_do_and_idle_looks_are_quiet(
    exchange: Exchange,
) -> None:
    """A quarantined file is an error, a delivered one info; a look that found nothing
    logs no route.summary at info (only with -v)."""
    drop_data = SAMPLE.read_bytes().decode("gbk").replace("京东", "抖音").encode("gbk")
    (exchange.inbox / SAMPLE.name).write_bytes(drop_data)
    config = str(exchange.config)
    bad = run_with(exchange, "--log-format", "json", "run", "--once", "--config", config)
    events = [json.loads(x) for x in bad.stderr.splitlines() if x.startswith("{")]
    (quarantined,) = [e for e in events if e["event"] == "file.quarantined"]
    assert quarantined["level"] == "error"
    idle = run_with(exchange, "--log-format", "json", "run", "--once", "--config", config)
    assert "route.summary" not in idle.stderr
    verbose = run_with(exchange, "--log-format", "json", "-v", "run", "--once", "--config", config)
    assert '"event": "route.summary"' in verbose.stderr


def test_the_readme_check_example_is_what_check_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    """README's `xchange check --config config/broken.toml` block: the file exists and
    check prints exactly those lines (exit 2)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ xchange check --config config/broken.toml\n", 1)[1].split("```")[0]
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["check", "--config", "config/broken.toml"])
    assert result.exit_code == 2
    assert result.stderr == block


def test_dry_run_says_what_would_happen_and_touches_nothing(exchange: Exchange) -> None:
    """`run --once --dry-run`: each file with its route and the names it would be
    delivered under, a bad file with why it would be quarantined, a stray named; the drop
    folder, target, quarantine and journal stay as they were."""
    from xchange.config import load_config
    from xchange.journal import open_journal

    exchange.drop_sample()
    bad = SAMPLE.read_bytes().decode("gbk").replace("京东", "抖音").encode("gbk")
    (exchange.inbox / "orders_20261122.csv").write_bytes(bad)
    (exchange.inbox / "Orders_3.csv").write_bytes(b"x")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in exchange.inbox.iterdir()}
    result = cli(exchange, "run", "--once", "--dry-run")
    assert result.exit_code == 1, result.output  # (what the run would say: one quarantined)
    assert "(dry run: 1 would be delivered, 1 quarantined; nothing was taken" in result.stdout
    assert (
        f"shop-orders: {SAMPLE.name} (874 bytes): would deliver as "
        "WMS_OUT_20261121_EC20261121001.xml, WMS_OUT_20261121_EC20261121002.xml, "
        "WMS_OUT_20261121_EC20261121003.xml"
    ) in result.stdout
    assert "orders_20261122.csv" in result.stdout and "would be quarantined" in result.stdout
    assert "'抖音' is not in value table 'channels'" in result.stdout
    assert "not taken by any route: shop-drop: Orders_3.csv (1 bytes)" in result.stdout
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in exchange.inbox.iterdir()}
    assert after == before
    assert not exchange.outbox.exists() and not exchange.quarantine.exists()
    journal = open_journal(load_config(exchange.config).journal)
    try:
        assert journal.query() == [] and journal.observations.held("shop-orders") == {}
    finally:
        journal.close()
    ran = cli(exchange, "run", "--once")
    assert ran.exit_code == 1  # the bad file, as the dry run said
    assert len(list(exchange.outbox.iterdir())) == 3
    assert cli(exchange, "run", "--dry-run").exit_code == 2  # it goes with --once


def test_shell_completion_as_readme_says(exchange: Exchange) -> None:
    """README's completion line prints a bash completion function, and completing
    `xchange quar` offers `quarantine`."""
    import os
    import subprocess
    import sys

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "_XCHANGE_COMPLETE=bash_source xchange" in readme
    argv = [sys.executable, "-m", "xchange"]
    script = subprocess.run(
        argv,
        env={**os.environ, "_XCHANGE_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "_xchange_completion()" in script.stdout
    offered = subprocess.run(
        argv,
        env={
            **os.environ,
            "_XCHANGE_COMPLETE": "bash_complete",
            "COMP_WORDS": "xchange quar",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "quarantine" in offered.stdout


def test_cron_learns_of_files_no_route_takes_from_the_run_and_its_exit_code(
    exchange: Exchange,
) -> None:
    """A run --once that delivered everything it took, beside a file no route takes, says
    so in a line and exits 5 (not 0); the dry run says the same with the same code."""
    exchange.drop_sample()
    (exchange.inbox / "ORDERS_2.CSV").write_bytes(b"x")
    dry = cli(exchange, "run", "--once", "--dry-run")
    assert dry.exit_code == 5, dry.output
    result = cli(exchange, "run", "--once")
    assert result.exit_code == 5, result.output
    assert "shop-orders: 1 delivered (3 documents)" in result.stdout
    assert (
        "not taken by any route: shop-drop: ORDERS_2.CSV (1 bytes): route shop-orders's "
        "pattern 'orders_*.csv' differs from it only by case"
    ) in result.stdout
    (exchange.inbox / "ORDERS_2.CSV").unlink()
    assert cli(exchange, "run", "--once").exit_code == 0
