"""Arrival deadlines and the silence alarm, with an injected clock, alerts to a real local
HTTP sink: nothing by 02:30 Shanghai time on a listed day -> one alert; the file arrives
late -> a recovered notice; a day not listed -> nothing; `status` shows the deadline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from tests.conftest import Exchange
from tests.servers import http_server
from xchange import deadlines
from xchange.alerts import Alerter
from xchange.cli import main
from xchange.config import ExpectSpec, load_config, parse_days
from xchange.journal import open_journal
from xchange.runner import Runner

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Thursday 3 December 2026 in Shanghai.
THURSDAY = datetime(2026, 12, 3, tzinfo=SHANGHAI)


def with_expect(exchange: Exchange, url: str, expect: str) -> None:
    exchange.write_config(
        route_extra=f"expect = {{ {expect} }}",
        retry="attempts = 1, later = 0",
    )
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace(
            "[[routes]]",
            f'[alerts]\nwindow = 3600\n\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}"\n\n'
            "[[routes]]",
            1,
        )
    )


def test_days_are_written_by_name() -> None:
    assert parse_days("mon-sat") == {0, 1, 2, 3, 4, 5}
    assert parse_days("fri-mon") == {4, 5, 6, 0}
    assert parse_days("mon,wed,fri") == {0, 2, 4}
    assert parse_days("daily") == set(range(7))
    with pytest.raises(ValueError, match="by name"):
        parse_days("1-5")
    with pytest.raises(ValueError, match="by"):
        ExpectSpec.model_validate({"days": "daily"})


def test_a_missed_deadline_alerts_once_and_a_late_arrival_recovers(exchange: Exchange) -> None:
    with http_server() as (url, posts):
        with_expect(exchange, url, 'by = "02:30", days = "mon-sat", timezone = "Asia/Shanghai"')
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        alerter = Alerter(config.alerts, journal, config_file=str(config.source_file))
        try:

            def at(hour: int, minute: int, day: datetime = THURSDAY) -> list[deadlines.Deadline]:
                now = day + timedelta(hours=hour, minutes=minute)
                return deadlines.check(config, journal, alerter, now.astimezone(UTC))

            (before,) = at(2, 29)
            assert not before.passed and posts == []
            assert before.describe() == "expects 1 file(s) by 02:30 (0 so far)"
            (missed,) = at(2, 31)
            assert missed.missed
            assert [p["json"]["title"] for p in posts] == [
                "[xchange] shop-orders: nothing arrived by 02:30"
            ]
            at(2, 45)
            at(4, 0)
            assert len(posts) == 1  # one alert a day, however often the daemon looks
            status = CliRunner().invoke(main, ["status", "--config", str(exchange.config)])
            assert status.exit_code == 0

            exchange.drop_sample()  # the partner's export runs late
            runner = Runner(config, journal, alerter=alerter)
            runner.run_once()
            runner.close()
            (late,) = at(5, 0)
            # Still missed: the file came after 02:30; it is said to have arrived late.
            assert late.missed and late.on_time == 0 and late.late == 1
            assert late.describe() == "MISSED: 0 of 1 file(s) by 02:30; 1 arrived late"
            titles = [p["json"]["title"] for p in posts]
            assert titles[-1] == "[xchange] shop-orders: recovered (arrived after 02:30)"
            assert [p["json"]["kind"] for p in posts].count("recovered") == 1
            at(6, 0)
            assert [p["json"]["kind"] for p in posts].count("recovered") == 1
            # Sunday is not a listed day: no deadline, no alert.
            assert at(3, 0, THURSDAY + timedelta(days=3)) == []
        finally:
            journal.close()


def test_status_shows_todays_deadline(exchange: Exchange) -> None:
    with http_server() as (url, _):
        with_expect(exchange, url, 'by = "23:59", days = "daily", timezone = "UTC"')
        result = CliRunner().invoke(main, ["status", "--config", str(exchange.config)])
        raw = CliRunner().invoke(main, ["status", "--json", "--config", str(exchange.config)])
    assert result.exit_code == 0, result.output
    assert "deadline: expects 1 file(s) by 23:59 (0 so far)" in result.stdout
    # For scripts: values, not prose.
    (route,) = json.loads(raw.stdout)["routes"]
    detail = route["deadline_detail"]
    today = datetime.now(UTC).date().isoformat()
    assert detail == {
        "day": today,
        "by": "23:59",
        "due": f"{today}T23:59:00+00:00",
        "wanted": 1,
        "delivered": 0,
        "on_time": 0,
        "late": 0,
        "passed": False,
        "judged": True,
        "missed": False,
    }


def test_a_silent_route_is_alerted_but_not_right_after_a_start(exchange: Exchange) -> None:
    """silence_hours = 2: a daemon started an hour ago says nothing yet; three hours after
    its start with nothing delivered, one alert (then held by the alert window)."""
    with http_server() as (url, posts):
        with_expect(exchange, url, "silence_hours = 2")
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        alerter = Alerter(config.alerts, journal, config_file=str(config.source_file))
        started = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)
        try:
            deadlines.check(config, journal, alerter, started + timedelta(hours=1), started=started)
            assert posts == []
            deadlines.check(config, journal, alerter, started + timedelta(hours=3), started=started)
            (alert,) = posts
            assert alert["json"]["cause"] == "silence"
            assert "no file for 2 hours (last delivery: never)" in alert["json"]["text"]
        finally:
            journal.close()


def test_the_morning_report_says_what_each_route_did(exchange: Exchange) -> None:
    """One file delivered (3 outputs), one quarantined for validation, a missed deadline:
    all in `xchange report`, and in its JSON."""
    import json

    from tests.conftest import SAMPLES

    with http_server() as (url, posts):
        with_expect(exchange, url, 'by = "02:30", days = "daily", timezone = "Asia/Shanghai"')
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        try:
            alerter = Alerter(config.alerts, journal, config_file=str(config.source_file))
            deadlines.check(config, journal, alerter, datetime.now(UTC).replace(hour=23))
        finally:
            journal.close()
        exchange.drop_sample()
        data = (SAMPLES / "shop-orders" / "in" / "orders_20261121.csv").read_bytes()
        (exchange.inbox / "orders_bad.csv").write_bytes(data.replace(b"13800138000", b"138", 1))
        CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
        text = CliRunner().invoke(main, ["report", "--config", str(exchange.config)])
        sent = CliRunner().invoke(main, ["report", "--send", "--config", str(exchange.config)])
        assert sent.exit_code == 0, sent.output
        reports = [p for p in posts if p["json"]["kind"] == "report"]
        assert len(reports) == 1
        assert "shop-orders: 1 delivered" in reports[0]["json"]["text"]
        raw = CliRunner().invoke(main, ["report", "--json", "--config", str(exchange.config)])
    assert text.exit_code == 0, text.output
    assert "shop-orders: 1 delivered (3 output file(s)" in text.stdout
    assert "1 quarantined, 0 waiting" in text.stdout
    assert "failures by cause: validation 1" in text.stdout
    assert "slow: #" in text.stdout
    (route,) = json.loads(raw.stdout)["routes"]
    assert route["delivered"] == 1 and route["failures"] == {"validation": 1}
    assert len(route["deadlines_missed"]) + len(route["deadlines_met_late"]) == 1
    bad = CliRunner().invoke(
        main, ["report", "--since", "last week", "--config", str(exchange.config)]
    )
    assert bad.exit_code == 2
    assert "Invalid value for '--since'" in bad.output and "2026-12-01" in bad.output


def test_a_file_delivered_after_the_deadline_does_not_meet_it(exchange: Exchange) -> None:
    """A file delivered at 03:55 showed today's 02:30 deadline as "met": deliveries were
    counted up to now, not up to the deadline."""
    now = datetime.now(UTC)
    if now.hour == 0 or (now.hour, now.minute) >= (23, 58):
        pytest.skip("needs a deadline earlier today and a later one still to come")
    earlier = (now - timedelta(minutes=30)).strftime("%H:%M")
    with http_server() as (url, posts):
        with_expect(exchange, url, f'by = "{earlier}", days = "daily", timezone = "UTC"')
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        alerter = Alerter(config.alerts, journal, config_file=str(config.source_file))
        try:
            exchange.drop_sample()
            runner = Runner(config, journal, alerter=alerter)
            runner.run_once()
            runner.close()
            (state,) = deadlines.check(config, journal, alerter, datetime.now(UTC))
            assert state.missed and state.late == 1, state
            assert state.describe().startswith(f"MISSED: 0 of 1 file(s) by {earlier}")
            kinds = [p["json"]["kind"] for p in posts]
            assert "recovered" in kinds  # missed, then arrived late: both said
            # The same file against a deadline still to come tonight: met by it.
            with_expect(exchange, url, 'by = "23:59", days = "daily", timezone = "UTC"')
            later = load_config(exchange.config)
            tonight = now.replace(hour=23, minute=59, second=30)
            (met,) = deadlines.check(later, journal, alerter, tonight)
            assert not met.missed and met.describe() == "met: 1 file(s) by 23:59"
        finally:
            journal.close()


def test_a_new_installation_started_after_the_deadline_does_not_judge_it(
    exchange: Exchange,
) -> None:
    """A daemon started at 03:00 on a new journal alerted "nothing arrived by 02:30" at once:
    nothing was there to see 02:30. A journal with history from before then is judged."""
    with http_server() as (url, posts):
        with_expect(exchange, url, 'by = "02:30", days = "mon-sat", timezone = "Asia/Shanghai"')
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        alerter = Alerter(config.alerts, journal, config_file=str(config.source_file))
        started = THURSDAY + timedelta(hours=3)
        try:
            (state,) = deadlines.check(
                config, journal, alerter, started + timedelta(minutes=1), started=started
            )
            assert not state.missed and posts == []
            assert state.describe().startswith("not judged: xchange started after 02:30")
        finally:
            journal.close()
