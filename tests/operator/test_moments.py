"""Every --since and --until reads a moment the same way: a time ago, today, yesterday, a
date or a local time; what it cannot read is refused naming the option."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from tests.conftest import Exchange
from xchange.cli import main
from xchange.cli.records import MOMENT


@pytest.mark.parametrize(
    ("text", "ago"),
    [("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("1h30m", timedelta(minutes=90))],
)
def test_a_time_ago_is_that_long_before_now(text: str, ago: timedelta) -> None:
    when = MOMENT.convert(text, None, None)
    assert abs((datetime.now().astimezone() - ago) - when) < timedelta(seconds=5)


def test_days_dates_and_local_times_are_moments_of_this_host() -> None:
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    assert MOMENT.convert("today", None, None) == midnight
    assert MOMENT.convert("yesterday", None, None) == midnight - timedelta(days=1)
    assert MOMENT.convert("2026-12-01", None, None) == datetime(2026, 12, 1).astimezone()
    assert MOMENT.convert("2026-12-01 02:00", None, None) == datetime(2026, 12, 1, 2).astimezone()


@pytest.mark.parametrize(
    "command",
    [["journal", "list"], ["journal", "actions"], ["report"]],
)
def test_every_since_takes_both_forms_and_names_itself_when_wrong(
    exchange: Exchange, command: list[str]
) -> None:
    config = ["--config", str(exchange.config)]
    for good in ("24h", "2026-12-01", "yesterday"):
        result = CliRunner().invoke(main, [*command, "--since", good, *config])
        assert result.exit_code == 0, (good, result.output)
    bad = CliRunner().invoke(main, [*command, "--since", "last week", *config])
    assert bad.exit_code == 2
    assert "Invalid value for '--since'" in bad.output
