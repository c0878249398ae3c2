"""Alerts reach a real local SMTP server (STARTTLS, login) and HTTP server: once per route
and cause per window, then a digest, and a "recovered" notice when the route works again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from tests.daemons import with_alerts
from tests.servers import SMTP_PASSWORD, SMTP_USER, http_server, smtp_server
from xchange.alerts import Alerter
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import open_journal

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def alerts_toml(smtp_port: int, cert: Path, url: str, window: int = 3600) -> str:
    return f"""
[alerts]
window = {window}

[[alerts.sinks]]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "starttls"
user = "{SMTP_USER}"
password_env = "XCHANGE_SMTP_PASSWORD"
from = "xchange@example.com"
to = ["ops@example.com"]
ca_file = "{cert}"
timeout = 10

[[alerts.sinks]]
type = "webhook"
url = "{url}/generic"

[[alerts.sinks]]
type = "webhook"
url = "{url}/wecom"
shape = "wecom"
"""


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(
        main,
        ["--log-format", "json", "run", "--once", "--config", str(exchange.config)],
        env={"XCHANGE_SMTP_PASSWORD": SMTP_PASSWORD},
    )


def broken(exchange: Exchange, name: str, phone: str) -> None:
    data = SAMPLE.read_bytes().replace(b"13800138000", phone.encode(), 1)
    (exchange.inbox / name).write_bytes(data)


def test_failure_alert_once_per_window_then_recovered(exchange: Exchange, tmp_path: Path) -> None:
    """Story 2: the alert names route, file count, cause, first error and the next command;
    a second failure in the window is held; a delivery afterwards sends "recovered"."""
    with smtp_server(tmp_path) as (port, cert, mailbox), http_server() as (url, posts):
        with_alerts(exchange, alerts_toml(port, cert, url))
        broken(exchange, "orders_a.csv", "138")
        first = run(exchange)
        assert first.exit_code == 1, first.output
        (mail,) = mailbox.texts()
        assert "[xchange] shop-orders: 1 file(s) failed (validation)" in mail
        assert "files:  1 (orders_a.csv)" in mail
        assert "cause:  validation (permanent: quarantined)" in mail
        assert "line 2: field 手机: pattern" in mail
        assert f"xchange quarantine list --route shop-orders --config {exchange.config}" in mail
        generic = [p for p in posts if p["path"] == "/generic"]
        wecom = [p for p in posts if p["path"] == "/wecom"]
        assert generic[0]["json"]["route"] == "shop-orders"
        assert generic[0]["json"]["cause"] == "validation"
        assert wecom[0]["json"]["msgtype"] == "markdown"
        assert "shop-orders" in wecom[0]["json"]["markdown"]["content"]

        broken(exchange, "orders_b.csv", "139")
        assert run(exchange).exit_code == 1
        assert len(mailbox.messages) == 1 and len(posts) == 2  # held for the digest

        exchange.drop_sample()
        assert run(exchange).exit_code == 0
        assert len(mailbox.messages) == 2
        assert "[xchange] shop-orders: recovered" in mailbox.texts()[1]
        assert [p["json"]["kind"] for p in posts if p["path"] == "/generic"] == [
            "failure",
            "recovered",
        ]
        everything = first.output + "".join(mailbox.texts())
        assert SMTP_PASSWORD not in everything


def test_held_alerts_go_out_as_one_digest_when_the_window_ends(
    exchange: Exchange, tmp_path: Path
) -> None:
    """Alerts held back in a window are summarised once the window is over."""
    with http_server() as (url, posts):
        with_alerts(
            exchange,
            f'[alerts]\nwindow = 600\n[[alerts.sinks]]\ntype = "webhook"\n'
            f'url = "{url}/hook"\nshape = "dingtalk"\n',
        )
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        clock = [datetime(2026, 11, 21, 2, 10, tzinfo=UTC)]
        alerter = Alerter(config.alerts, journal, now=lambda: clock[0])
        for minute in range(4):
            clock[0] += timedelta(minutes=minute)
            alerter.failure("shop-orders", "connection", True, ["a.csv"], "connection lost")
        assert len(posts) == 1
        assert "transient: will retry" in posts[0]["json"]["markdown"]["text"]
        alerter.flush()
        assert len(posts) == 1  # the window is still open
        clock[0] += timedelta(minutes=11)
        alerter.flush()
        assert len(posts) == 2
        assert "3 more failure alert(s)" in posts[1]["json"]["markdown"]["title"]
        journal.close()


def test_a_failing_sink_never_stops_the_exchange(exchange: Exchange) -> None:
    """An unreachable alert receiver is logged; files are still processed."""
    from tests.sshd import free_port

    with_alerts(
        exchange,
        f'[alerts]\n[[alerts.sinks]]\ntype = "webhook"\n'
        f'url = "http://127.0.0.1:{free_port()}/x"\ntimeout = 2\n',
    )
    broken(exchange, "orders_a.csv", "138")
    result = run(exchange)
    assert result.exit_code == 1
    assert '"event": "alert.sink_failed"' in result.stderr


def test_alerts_test_sends_through_each_sink_whatever_the_window(
    exchange: Exchange, tmp_path: Path
) -> None:
    """`xchange alerts test` reaches the real SMTP and HTTP sinks at once, twice in a row
    (no window holds a test back); `--sink 2` only the second; a sink that fails is named
    and the exit code is 1."""
    with smtp_server(tmp_path) as (port, cert, mailbox), http_server() as (url, posts):
        with_alerts(exchange, alerts_toml(port, cert, url))
        env = {"XCHANGE_SMTP_PASSWORD": SMTP_PASSWORD}
        args = ["alerts", "test", "--config", str(exchange.config)]
        for _ in range(2):
            result = CliRunner().invoke(main, args, env=env)
            assert result.exit_code == 0, result.output
            assert result.stdout.splitlines() == [
                "sink 1 (email): sent",
                "sink 2 (webhook): sent",
                "sink 3 (webhook): sent",
            ]
        assert len(mailbox.messages) == 2 and "[xchange] test alert" in mailbox.texts()[0]
        assert [p["path"] for p in posts] == ["/generic", "/wecom"] * 2
        only = CliRunner().invoke(main, [*args, "--sink", "2"], env=env)
        assert only.stdout == "sink 2 (webhook): sent\n" and len(posts) == 5
    # The servers are gone now: every sink fails, said per sink.
    failing = CliRunner().invoke(main, args, env=env)
    assert failing.exit_code == 1
    assert failing.stdout.count("FAILED") == 3
    assert SMTP_PASSWORD not in failing.output


def test_a_sink_added_during_a_window_gets_the_next_alert(
    exchange: Exchange, tmp_path: Path
) -> None:
    """A failure alerted through the webhook opens a window; a mail sink is added: the next
    failure of the same cause goes out at once (the new sink is not held back by the old
    window); the same failure again is held."""
    with smtp_server(tmp_path) as (port, cert, mailbox), http_server() as (url, posts):
        hook_only = (
            '[alerts]\nwindow = 3600\n\n[[alerts.sinks]]\ntype = "webhook"\n'
            f'url = "{url}/generic"\n'
        )
        with_alerts(exchange, hook_only)
        broken(exchange, "orders_a.csv", "138")
        assert run(exchange).exit_code == 1
        assert len(posts) == 1
        exchange.write_config()
        with_alerts(exchange, alerts_toml(port, cert, url))
        broken(exchange, "orders_b.csv", "139")
        assert run(exchange).exit_code == 1
        assert len(mailbox.messages) == 1  # the new mail sink heard of it at once
        broken(exchange, "orders_c.csv", "137")
        assert run(exchange).exit_code == 1
        assert len(mailbox.messages) == 1  # and then the window holds it


def test_a_host_key_problem_is_alerted_as_needing_a_person(exchange: Exchange) -> None:
    """An unknown host key was alerted as "transient: will retry": no retry fixes it."""
    with http_server() as (url, posts):
        with_alerts(exchange, f'[alerts]\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}/hook"\n')
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        try:
            alerter = Alerter(config.alerts, journal)
            alerter.failure("shop-orders", "host-key-unknown", False, ["a.csv"], "not pinned")
            (post,) = posts
            text = str(post["json"])
            assert "needs a person" in text and "will retry" not in text
        finally:
            journal.close()
