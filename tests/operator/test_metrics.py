"""Metrics and health of a running daemon, scraped over HTTP from a real `xchange run`
process: files by outcome, documents, bytes, arrival-to-delivery time, last success,
journal states, process metrics; /healthz and /readyz; clients not on this host refused
without the token."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SAMPLES, Exchange
from tests.daemons import daemon, fast, scrape, value, with_http  # noqa: F401
from tests.procs import wait_for
from tests.sshd import SshServer, free_port
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.metrics import HttpEndpoint, Metrics
from xchange.results import FileResult, Outcome, RouteResult


def test_a_running_daemon_is_scraped_for_what_it_did(exchange: Exchange) -> None:
    """One good file and one broken one: delivered 1 (3 documents, its bytes), quarantined
    1 with its cause, one arrival-to-delivery time, a last success, one file in quarantine
    by the journal, the process's own metrics; healthy and ready."""
    port = free_port()
    with_http(exchange, port)
    sample = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"
    with daemon(exchange):
        wait_for(lambda: scrape(port, "/healthz")[0] == 200, what="the endpoint")
        exchange.drop_sample()
        (exchange.inbox / "orders_broken.csv").write_bytes(b"\xff\xfe not a csv at all\n")

        def counted() -> bool:
            text = scrape(port)[1]
            return (value(text, "xchange_files_total", outcome="delivered") or 0) >= 1 and (
                value(text, "xchange_files_total", outcome="quarantined") or 0
            ) >= 1

        wait_for(counted, what="both files counted")
        code, text = scrape(port)
        assert code == 200
        assert value(text, "xchange_files_total", route="shop-orders", outcome="delivered") == 1
        assert value(text, "xchange_documents_total", route="shop-orders") == 3
        assert value(text, "xchange_bytes_total", route="shop-orders") == sample.stat().st_size
        assert value(text, "xchange_delivery_seconds_count", route="shop-orders") == 1
        assert (value(text, "xchange_last_success_timestamp_seconds", route="shop-orders") or 0) > 0
        causes = [line for line in text.splitlines() if line.startswith("xchange_failures_total{")]
        assert len(causes) == 1 and 'route="shop-orders"' in causes[0]
        assert value(text, "xchange_files_in_state", route="shop-orders", state="quarantined") == 1
        assert value(text, "xchange_oldest_waiting_seconds", route="shop-orders") == 0
        assert value(text, "process_cpu_seconds_total") is not None
        assert value(text, "xchange_journal_seconds_count") is not None
        # One series per thing counted: no *_created twin of each counter.
        assert "_created" not in text
        # Bounded labels: no file name in any label.
        assert "orders_20261121" not in text and "orders_broken" not in text
        assert scrape(port, "/healthz") == (200, "ok\n")
        assert scrape(port, "/readyz") == (200, "ready\n")
        assert scrape(port, "/nothing")[0] == 404


def test_readiness_says_which_route_retrying_cannot_fix(exchange: Exchange) -> None:
    """A route whose target refuses its host key (permanent) makes /readyz answer 503
    naming it; a transient cause does not; a delivered look clears it."""
    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    try:
        metrics = Metrics(config, journal)
        endpoint = HttpEndpoint(metrics, "127.0.0.1:0")
        endpoint.start()
        try:
            metrics.observe(RouteResult("shop-orders", error="down", error_kind="connection"))
            assert scrape(endpoint.port, "/readyz")[0] == 200
            metrics.observe(RouteResult("shop-orders", error="key", error_kind="host-key-unknown"))
            assert scrape(endpoint.port, "/readyz") == (
                503,
                "shop-orders: needs a person: host-key-unknown\n",
            )
            text = scrape(endpoint.port)[1]
            errors = "xchange_route_errors_total"
            assert value(text, errors, route="shop-orders", cause="connection") == 1
            assert value(text, errors, route="shop-orders", cause="host-key-unknown") == 1
            assert value(text, "xchange_connection_failures_total", endpoint="shop-drop") == 1
            assert value(text, "xchange_held_files", route="shop-orders", reason="writing") == 0
            done = FileResult("shop-orders", "x.csv", Outcome.DELIVERED, documents=1)
            metrics.observe(RouteResult("shop-orders", files=[done]))
            assert scrape(endpoint.port, "/readyz")[0] == 200
        finally:
            endpoint.stop()
    finally:
        journal.close()


def test_a_client_not_on_this_host_needs_the_token(exchange: Exchange, tmp_path: Path) -> None:
    """The endpoint answers loopback clients; any other is refused (403) unless it sends
    the configured token; without a token configured, always refused."""
    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    try:
        metrics = Metrics(config, journal)
        guarded = HttpEndpoint(metrics, "127.0.0.1:0", token="s3cret-token")
        open_one = HttpEndpoint(metrics, "127.0.0.1:0")
        try:
            assert guarded.answer("/healthz", "127.0.0.1", None)[0] == 200
            assert guarded.answer("/healthz", "::1", None)[0] == 200
            assert guarded.answer("/metrics", "192.0.2.7", None)[0] == 403
            assert guarded.answer("/metrics", "192.0.2.7", "Bearer wrong")[0] == 403
            assert guarded.answer("/metrics", "192.0.2.7", "Bearer s3cret-token")[0] == 200
            assert open_one.answer("/metrics", "192.0.2.7", "Bearer s3cret-token")[0] == 403
        finally:
            guarded.server.server_close()
            open_one.server.server_close()
    finally:
        journal.close()


def test_sftp_sessions_and_reconnects_are_counted(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """Each SFTP session opened (a worker's first, then one per reconnect after a loss)
    is counted by endpoint in xchange_sftp_sessions_opened_total."""
    from tests.sftp_routes import endpoint
    from xchange.remote.sftp import SFTPRemote

    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    try:
        metrics = Metrics(config, journal)
        remote = SFTPRemote("partner-inbox", endpoint(sshd, sshd.folder("sessions")))
        before = (
            value(
                metrics.render().decode(),
                "xchange_sftp_sessions_opened_total",
                endpoint="partner-inbox",
            )
            or 0
        )
        remote.connect()
        remote.close()  # the session is lost: the next call reconnects
        assert remote.stat("x") is None
        remote.close()
        after = value(
            metrics.render().decode(),
            "xchange_sftp_sessions_opened_total",
            endpoint="partner-inbox",
        )
        assert after == before + 2
    finally:
        journal.close()


def test_a_route_added_by_a_reload_is_counted(exchange: Exchange) -> None:
    """The metrics follow the daemon's configuration: after a reload adds a route, its
    looks are counted and its journal gauges appear (no error, no stale route list)."""
    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    try:
        metrics = Metrics(config, journal)
        added = config.routes[0].model_copy(update={"name": "new-route"})
        reloaded = config.model_copy(update={"routes": [*config.routes, added]})
        metrics.current = lambda: reloaded
        done = FileResult("new-route", "x.csv", Outcome.DELIVERED, documents=2)
        metrics.observe(RouteResult("new-route", files=[done]))
        text = metrics.render().decode()
        assert value(text, "xchange_files_total", route="new-route", outcome="delivered") == 1
        assert value(text, "xchange_files_in_state", route="new-route", state="quarantined") == 0
    finally:
        journal.close()


def test_the_last_success_is_there_after_a_restart(exchange: Exchange) -> None:
    """xchange_last_success_timestamp_seconds came from the process's memory: after a
    restart it was gone until the next delivery, so a silence rule on it never fired for
    a route that went quiet after a restart. It comes from the journal now."""
    port = free_port()
    with_http(exchange, port)
    with daemon(exchange):
        wait_for(lambda: scrape(port, "/healthz")[0] == 200, what="the endpoint")
        exchange.drop_sample()
        wait_for(
            lambda: value(scrape(port)[1], "xchange_last_success_timestamp_seconds") is not None,
            what="a last success",
        )
        first = value(scrape(port)[1], "xchange_last_success_timestamp_seconds")
    with daemon(exchange):  # a restart, nothing new to deliver
        wait_for(lambda: scrape(port, "/healthz")[0] == 200, what="the endpoint again")
        after = value(
            scrape(port)[1], "xchange_last_success_timestamp_seconds", route="shop-orders"
        )
    assert first is not None and after is not None and abs(after - first) < 5


def test_a_route_waiting_for_a_person_is_not_ready_until_the_cause_is_gone(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """A file waits because the target's host key is not pinned. /readyz is 503 and the
    status page shows the route red, from the journal: for a metrics object that saw no
    look (a restart) and after looks that did nothing (before: 503 for the one look that
    failed, then 200, and the page amber, "waiting"). Once the key is trusted and the
    file goes, ready again."""
    from click.testing import CliRunner

    from tests.sftp_routes import sftp_target_toml
    from xchange import page
    from xchange.cli import main

    unpinned = tmp_path / "empty_known_hosts"
    unpinned.write_text("")
    folder = sshd.folder("needs-a-person")
    exchange.write_config(target=sftp_target_toml(sshd, folder, known_hosts=unpinned))
    exchange.drop_sample()
    runner = CliRunner()
    assert runner.invoke(main, ["run", "--once", "--config", str(exchange.config)]).exit_code == 3
    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    try:
        metrics = Metrics(config, journal)  # no look seen: as after a restart
        metrics.observe(RouteResult("shop-orders"))  # a look that found nothing to do
        (problem,) = metrics.ready()
        assert problem.startswith("shop-orders: needs a person: host-key-unknown")
        assert "1 file" in problem
        html = page.render(config, journal)
        assert "<h2 class='bad'>shop-orders</h2>" in html
        assert "needs a person" in html
    finally:
        journal.close()
    unpinned.write_text(sshd.known_hosts.read_text())  # the person pinned the key
    runner.invoke(main, ["retry", "--route", "shop-orders", "--config", str(exchange.config)])
    done = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert done.exit_code == 0, done.output
    journal = open_journal(config.journal)
    try:
        assert Metrics(config, journal).ready() == []
        assert "<h2 class='ok'>shop-orders</h2>" in page.render(config, journal)
    finally:
        journal.close()
