"""Pickup receipts on a real SFTP inbox: the partner collects what xchange delivered (the
file leaves the OpenSSH server's folder); xchange notes when, shows what still waits, and
alerts what was not collected in time, once per episode, through a real HTTP sink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from tests.conftest import Exchange
from tests.daemons import SAMPLE
from tests.servers import http_server
from tests.sftp_routes import sftp_target
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.runner import Runner
from xchange.status import route_status

TARGET = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.at


def collecting(exchange: Exchange, sshd: SshServer, folder: Path, url: str, extra: str) -> None:
    sftp_target(exchange, sshd, folder)
    text = exchange.config.read_text().replace(TARGET, TARGET[:-1] + f", {extra} }}")
    exchange.config.write_text(
        text + f'\n[alerts]\nwindow = 60\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}"\n'
    )


def test_a_partner_collecting_from_an_sftp_inbox_is_noted_and_lateness_alerted_once(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    inbox = tmp_path / "wms-inbox"
    inbox.mkdir()
    with http_server() as (url, received):
        collecting(exchange, sshd, inbox, url, 'pickup_within = "2h"')
        exchange.drop_sample()
        config = load_config(exchange.config)
        clock = Clock()
        with open_journal(config.journal) as journal:
            runner = Runner(config, journal, now=clock)
            try:
                [result] = runner.run_once()
                delivered = sorted(p.name for p in inbox.iterdir())
                assert result.ok and len(delivered) >= 2
                waiting = journal.pickups.waiting("shop-orders")
                assert sorted(w.path for w in waiting) == delivered

                # `status` says what waits, from the journal.
                shown = CliRunner().invoke(main, ["status", "--config", str(exchange.config)])
                assert shown.exit_code == 0, shown.output
                assert f"pickup: {len(delivered)} waiting for the partner" in shown.output
                assert f"awaiting pickup: {delivered[0]}" in shown.output

                # The partner takes the first file an hour later.
                (inbox / delivered[0]).unlink()
                clock.at += timedelta(hours=1)
                runner.look_for_pickups()
                [first] = [
                    o
                    for r in journal.query(route="shop-orders")
                    for o in r.outputs
                    if o.path == delivered[0]
                ]
                assert (first.pickup, first.picked_up_at) == ("collected", clock.at)
                assert received == []
                shown = CliRunner().invoke(
                    main, ["journal", "show", "1", "--config", str(exchange.config)]
                )
                assert f"{delivered[0]}" in shown.output
                assert f"(picked up at {clock.at.isoformat()})" in shown.output
                assert (
                    f"{delivered[1]}" in shown.output
                    and "(waiting for the partner)" in shown.output
                )

                # Two hours after delivery the rest are overdue: one alert, naming them.
                clock.at += timedelta(hours=1, minutes=5)
                runner.look_for_pickups()
                [alert] = received
                assert "not collected within 2h" in alert["json"]["title"]
                assert all(name in alert["json"]["text"] for name in delivered[1:])
                assert delivered[0] not in alert["json"]["text"]
                clock.at += timedelta(minutes=30)
                runner.look_for_pickups()
                assert len(received) == 1  # once per episode, not per look

                [route] = route_status(config, journal, clock.at)
                assert [w["overdue"] for w in route.awaiting_pickup] == [True] * (
                    len(delivered) - 1
                )
                assert route.pickup is not None and "not collected within 2h" in route.pickup

                # The partner's import runs at last: one "recovered".
                for name in delivered[1:]:
                    (inbox / name).unlink()
                clock.at += timedelta(minutes=10)
                runner.look_for_pickups()
                assert [a["json"]["kind"] for a in received] == ["failure", "recovered"]
                assert journal.pickups.waiting("shop-orders") == []
                picked = [o.picked_up_at for r in journal.query() for o in r.outputs]
                assert picked.count(clock.at) == len(delivered) - 1
            finally:
                runner.close()


def test_an_unreachable_target_is_alerted_and_nothing_is_taken_as_collected(
    exchange: Exchange, own_sshd: SshServer, tmp_path: Path
) -> None:
    """A look that cannot list the target says so; it never takes files for collected."""
    inbox = tmp_path / "wms-inbox"
    inbox.mkdir()
    with http_server() as (url, received):
        collecting(exchange, own_sshd, inbox, url, "pickup = true")
        exchange.drop_sample()
        config = load_config(exchange.config)
        with open_journal(config.journal) as journal:
            runner = Runner(config, journal)
            try:
                runner.run_once()
                count = len(journal.pickups.waiting("shop-orders"))
                assert count >= 2
                own_sshd.stop()
                runner.close()
                runner.look_for_pickups()
                assert len(journal.pickups.waiting("shop-orders")) == count
                [alert] = received
                assert "cannot see whether the partner collected" in alert["json"]["title"]
            finally:
                runner.close()


def test_pickups_are_looked_for_where_each_output_was_delivered(
    exchange: Exchange, tmp_path: Path
) -> None:
    """A route moved to another target: what it delivered before still waits at the old
    one (it is not taken for collected because the new folder lacks it); the same name
    delivered again once the partner took it is collected, not replaced; a file re-sent on
    purpose over one still waiting replaces it (one waiting, not two); checksum files are
    not waited for."""
    target = TARGET[:-1] + ', pickup = true, sidecar = "sha256" }'
    exchange.config.write_text(exchange.config.read_text().replace(TARGET, target))
    exchange.drop_sample()
    config = load_config(exchange.config)
    with open_journal(config.journal) as journal:
        runner = Runner(config, journal)
        try:
            runner.run_once()
            first = sorted(p.name for p in exchange.outbox.iterdir())
            waiting = journal.pickups.waiting("shop-orders")
            assert len(first) == 6 and len(waiting) == 3  # (no .sha256 among them)
            assert all(not w.path.endswith(".sha256") for w in waiting)
        finally:
            runner.close()
    # The route now delivers elsewhere: the old folder is looked at where it is.
    other = tmp_path / "outbox2"
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace(
            "[[routes]]",
            f'[endpoints.wms-outbox2]\ntype = "local"\npath = "{other}"\n\n[[routes]]',
            1,
        ).replace('endpoint = "wms-outbox"', 'endpoint = "wms-outbox2"')
    )
    config = load_config(exchange.config)
    with open_journal(config.journal) as journal:
        runner = Runner(config, journal)
        try:
            runner.look_for_pickups()
            assert len(journal.pickups.waiting("shop-orders")) == 3
            # The partner takes one file at the old target.
            (exchange.outbox / waiting[0].path).unlink()
            runner.look_for_pickups()
            assert [w.path for w in journal.pickups.waiting("shop-orders")] == [
                w.path for w in waiting[1:]
            ]
        finally:
            runner.close()


def test_a_name_delivered_again_after_the_partner_took_it_was_collected_not_replaced(
    exchange: Exchange,
) -> None:
    exchange.write_config(route_extra='repeats = "deliver"')
    target = TARGET[:-1] + ", pickup = true }"
    exchange.config.write_text(exchange.config.read_text().replace(TARGET, target))
    exchange.drop_sample()
    config = load_config(exchange.config)
    name = "WMS_OUT_20261121_EC20261121001.xml"
    with open_journal(config.journal) as journal:
        runner = Runner(config, journal)
        try:
            runner.run_once(wait_to_settle=False)
            (exchange.outbox / name).unlink()  # the partner takes it; no look since
            again = SAMPLE.read_bytes().replace(b"EC20261121002", b"EC20261121008")
            again = again.replace(b"EC20261121003", b"EC20261121009")
            (exchange.inbox / "orders_20261122.csv").write_bytes(again)
            runner.run_once(wait_to_settle=False)
            first = {o.path: o for o in journal.get(1).outputs}
            assert first[name].pickup == "collected" and first[name].picked_up_at is not None
            # Sent again on purpose while its outputs still wait: they are replaced, and
            # one waits per name, not two.
            runner.reprocess(journal.get(2), force=True)  # type: ignore[arg-type]
            names = [w.path for w in journal.pickups.waiting("shop-orders")]
            assert len(names) == len(set(names)) == 5
            assert "replaced" in [o.pickup for o in journal.get(2).outputs]  # type: ignore[union-attr]
        finally:
            runner.close()


def test_check_refuses_a_pickup_deadline_with_pickups_turned_off(exchange: Exchange) -> None:
    target = TARGET[:-1] + ', pickup = false, pickup_within = "2h" }'
    exchange.config.write_text(exchange.config.read_text().replace(TARGET, target))
    checked = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert checked.exit_code == 2
    assert "pickup = false with pickup_within" in checked.output
