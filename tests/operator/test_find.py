"""Where did it go: `xchange find` answers by order number, output name, checksum and
source name, says who acted on a file and why, and takes SQL's wildcards in a term as
themselves. Story 8 ("we never got it"), over a real OpenSSH server."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from tests.sftp_routes import sftp_target, sftp_target_toml
from tests.sshd import SshServer
from xchange import finding
from xchange.cli import main
from xchange.journal.sqlite import SQLiteJournal

SOURCE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"
ORDER = "EC20261121001"
OUTPUT = f"WMS_OUT_20261121_{ORDER}.xml"


def cli(exchange: Exchange, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(exchange.config)], env=env)


def delivered_over_sftp(exchange: Exchange, sshd: SshServer, name: str) -> Path:
    """The route with dedupe_key delivering the sample orders to the sshd: the folder."""
    exchange.write_config(route_extra='dedupe_key = "OrderNo"')
    folder = sshd.folder(name)
    sftp_target(exchange, sshd, folder)
    exchange.drop_sample()
    ran = cli(exchange, "run", "--once")
    assert ran.exit_code == 0, ran.output
    assert len(list(folder.iterdir())) == 3
    return folder


@pytest.mark.sftp
def test_find_says_where_an_order_went(exchange: Exchange, sshd: SshServer) -> None:
    """By the order number: the source file that carried it, its route, each output (where,
    name, size, when), its state; the same file by an output's name, an output's or the
    source's sha256 prefix, the source's name or a pattern; --json; nothing: exit 1."""
    folder = delivered_over_sftp(exchange, sshd, "find")
    delivered = (folder / OUTPUT).read_bytes()
    source_sum = hashlib.sha256(SOURCE.read_bytes()).hexdigest()

    by_order = cli(exchange, "find", ORDER)
    assert by_order.exit_code == 0, by_order.output
    text = by_order.stdout
    assert text.startswith(
        f"#1 shop-orders: shop-drop:orders_20261121.csv ({SOURCE.stat().st_size} bytes, "
        f"sha256 {source_sum[:12]})"
    ), text
    assert f"matched:          business key {ORDER}\n" in text
    assert "state:            archived since " in text
    assert (
        f"output:           wms-outbox:{OUTPUT}, {len(delivered)} bytes, "
        f"sha256 {hashlib.sha256(delivered).hexdigest()[:12]}, delivered 20" in text
    )
    assert text.count("output:") == 3 and "picked up" not in text

    by_output = cli(exchange, "find", OUTPUT).stdout
    assert by_output.startswith(
        "#1 shop-orders: "
    ) and f"output (matched): wms-outbox:{OUTPUT}" in (by_output)
    output_sum = hashlib.sha256(delivered).hexdigest()
    assert (
        f"matched:          output sha256 ({OUTPUT})"
        in cli(exchange, "find", output_sum[:8]).stdout
    )
    assert "matched:          source sha256" in cli(exchange, "find", source_sum[:10]).stdout
    assert "matched:          source name" in cli(exchange, "find", "orders_20261121.csv").stdout
    assert cli(exchange, "find", "orders_2026*", "--route", "shop-orders").stdout.startswith("#1 ")

    data = json.loads(cli(exchange, "find", ORDER, "--json").stdout)
    (found,) = data["files"]
    assert found["id"] == 1 and found["route"] == "shop-orders" and found["keys"] == [ORDER]
    assert found["sha256"] == source_sum and found["matched"] == ["business key"]
    assert {o["path"] for o in found["outputs"]} >= {OUTPUT}
    assert all(o["picked_up_at"] is None for o in found["outputs"])
    assert data["more"] is False

    missing = cli(exchange, "find", "EC20991231999")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr.startswith("nothing in the journal matches 'EC20991231999' (")
    assert cli(exchange, "find", ORDER, "--route", "no-such-route").exit_code == 2
    assert cli(exchange, "find", " ").exit_code == 2


@pytest.mark.sftp
def test_an_action_with_a_reason_is_found_with_who_did_it(
    exchange: Exchange, sshd: SshServer
) -> None:
    """`reprocess --force --reason` sends the order again; `find` and `journal show` then
    say who did it (the OS user; through sudo the person first), when and why; an action
    without a reason says so."""
    folder = delivered_over_sftp(exchange, sshd, "find-reason")
    (folder / OUTPUT).write_bytes(b"lost by the receiver")
    again = cli(
        exchange,
        "reprocess",
        "1",
        "--force",
        "--reason",
        "partner\nasked",  # (one line in the journal, whatever was typed)
        env={"SUDO_USER": "", "LOGNAME": "ceo", "USER": "ceo"},  # (the uid says who)
    )
    assert again.exit_code == 0, again.output
    assert (folder / OUTPUT).read_bytes() == (
        SAMPLES / "shop-orders" / "expected" / OUTPUT
    ).read_bytes()
    user = pwd.getpwuid(os.getuid()).pw_name
    found = cli(exchange, "find", ORDER).stdout
    assert f" reprocess (--force) by {user}: partner asked\n" in found, found
    assert "action:           20" in found
    assert (
        cli(exchange, "retry", "--reason", "nothing waits", env={"SUDO_USER": "li"}).exit_code == 0
    )

    shown = json.loads(cli(exchange, "journal", "show", "1", "--json").stdout)
    assert [(a["action"], a["who"], a["reason"]) for a in shown["actions"]] == [
        ("reprocess", user, "partner asked")
    ]
    assert "  reprocess (--force) by " in cli(exchange, "journal", "show", "1").stdout

    # A file quarantined, dropped through sudo without a reason.
    broken = exchange.inbox / "orders_20261122.csv"
    broken.write_bytes(b"\xff\xfe not a csv at all\n")
    assert cli(exchange, "run", "--once").exit_code == 1
    dropped = cli(exchange, "quarantine", "drop", "2", env={"SUDO_USER": "li"})
    assert dropped.exit_code == 0, dropped.output
    text = cli(exchange, "find", "orders_20261122.csv").stdout
    assert "state:            dropped since " in text
    assert f" quarantine drop by li (sudo as {user}): no reason given" in text
    assert "outputs:          none delivered" in text


def test_sql_wildcards_and_quotes_in_a_term_match_only_themselves(exchange: Exchange) -> None:
    """A source named with %, _ and a quote is found by its name; the same characters in a
    term never match other names (a local route: the names are the point here)."""
    odd = "orders_100%_o'k.csv"
    shutil.copy(SOURCE, exchange.inbox / odd)
    assert cli(exchange, "run", "--once").exit_code == 0
    assert cli(exchange, "find", odd).stdout.startswith(f"#1 shop-orders: shop-drop:{odd} (")
    for term in ("orders_1%", "orders_100__o'k.csv", "%", "_", "orders_%*", "' OR ''='"):
        result = cli(exchange, "find", term)
        assert result.exit_code == 1, (term, result.output)
    assert cli(exchange, "find", "orders_100%*").stdout.startswith("#1 ")


@pytest.mark.sftp
def test_trust_and_prune_are_noted_with_who_and_why(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """Actions on no file (pinning a host key, pruning the journal) are noted too, and
    `journal actions` lists them newest first (text and JSON)."""
    known = tmp_path / "pinned_known_hosts"
    exchange.write_config(target=sftp_target_toml(sshd, sshd.folder("noted"), known_hosts=known))
    pinned = cli(exchange, "trust", "wms-outbox", "--yes", "--reason", "vendor read it out")
    assert pinned.exit_code == 0, pinned.output
    again = cli(exchange, "trust", "wms-outbox", "--yes", "--reason", "checking")
    assert "already pinned" in again.stdout  # (nothing changed: nothing noted)
    assert cli(exchange, "journal", "prune", "--older-than", "30").exit_code == 0
    newest, oldest = cli(exchange, "journal", "actions", env={"SUDO_USER": ""}).stdout.splitlines()
    assert "journal prune (0 record(s) older than 30 day(s)) by " in newest
    assert newest.endswith(": no reason given")
    assert f" trust (wms-outbox (127.0.0.1:{sshd.port}): pinned " in oldest
    assert "SHA256:" in oldest and oldest.endswith(": vendor read it out")
    lines = cli(exchange, "journal", "actions", "--json", "--limit", "1").stdout.splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["journal prune"]
    assert json.loads(lines[0])["who"] == pwd.getpwuid(os.getuid()).pw_name


def test_when_an_output_was_picked_up_is_said_where_the_journal_knows_it(
    exchange: Exchange,
) -> None:
    """A target whose partner collects: the output taken from the outbox is said picked
    up, in text, JSON and HTML; the ones still there are not."""
    target = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'
    exchange.config.write_text(
        exchange.config.read_text().replace(target, target[:-1] + ", pickup = true }")
    )
    shutil.copy(SOURCE, exchange.inbox / SOURCE.name)
    assert cli(exchange, "run", "--once").exit_code == 0
    with SQLiteJournal(exchange.journal) as journal:
        findings = finding.search(journal, SOURCE.name)
    assert "picked up" not in "\n".join(finding.lines(findings))
    first = sorted(exchange.outbox.iterdir())[0]
    first.unlink()  # the partner collects it
    assert cli(exchange, "run", "--once").exit_code == 0  # (looks at the end of the run)
    with SQLiteJournal(exchange.journal) as journal:
        collected = finding.search(journal, SOURCE.name)
    (found,) = collected.found
    [at] = [o.picked_up_at for o in found.record.outputs if o.path == first.name]
    assert at is not None
    said = f"picked up at {at.astimezone():%Y-%m-%d %H:%M:%S}"
    assert sum(said in line for line in finding.lines(collected)) == 1
    assert said in finding.html(collected)
    data = finding.as_json(collected)["files"][0]["outputs"]
    assert [o["picked_up_at"] for o in data] == [
        at.isoformat() if o["path"] == first.name else None for o in data
    ]
