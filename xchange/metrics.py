"""Metrics for Prometheus (prometheus-client, the only module that imports it) and the
health endpoints, served by the daemon on ``[daemon] http`` (off unless configured).

- ``/metrics``: per route, files by outcome, documents, bytes, the time from a file's
  arrival to its delivery (histogram), files held, quarantined and retrying, the age of
  the oldest waiting file, the last success; per endpoint, connection failures; journal
  latency; the process's own metrics. Label values are route, endpoint and cause names
  from the configuration, never a file name: the label sets stay bounded.
- ``/``: the status page (``xchange.page``); ``/?find=TERM`` searches the journal as
  ``xchange find`` does.
- ``/healthz``: the process lives (200).
- ``/readyz``: the journal answers and no route's target is in trouble that retrying
  cannot fix (200, else 503 with the reasons, one a line).

Bound to 127.0.0.1 by default; a client not on this host is refused unless the request
carries the configured token (``Authorization: Bearer ...``).
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xchange import pickups
from xchange.config import AppConfig
from xchange.errors import NEEDS_A_PERSON, RETRYABLE_KINDS, XchangeError
from xchange.journal import DONE_STATES, Journal, State
from xchange.results import DELIVERED, DUPLICATE, QUARANTINED, RETRY_LATER, RouteResult
from xchange.status import waiting_for_a_person

log = structlog.get_logger(__name__)

# Each counter and histogram would also be given as a second series, ``*_created`` (when it
# was made: this process's start, of no use to an alert): one series per thing counted.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Arrival -> delivered, seconds: from a second to a day.
DELIVERY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
JOURNAL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """The daemon's metrics; ``observe`` is given each route's result."""

    def __init__(self, config: AppConfig, journal: Journal) -> None:
        #: The configuration in force (the daemon's, which a reload replaces).
        self.current: Callable[[], AppConfig] = lambda: config
        self.registry = CollectorRegistry(auto_describe=True)
        self.journal = journal
        r = self.registry
        self.files = Counter(
            "xchange_files", "Source files by outcome", ["route", "outcome"], registry=r
        )
        self.documents = Counter("xchange_documents", "Documents delivered", ["route"], registry=r)
        self.bytes = Counter("xchange_bytes", "Source bytes delivered", ["route"], registry=r)
        self.failures = Counter(
            "xchange_failures", "Files not delivered, by cause", ["route", "cause"], registry=r
        )
        self.delivery = Histogram(
            "xchange_delivery_seconds",
            "From a file's arrival (its time in the drop folder) to its delivery",
            ["route"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.route_errors = Counter(
            "xchange_route_errors",
            "Looks at a route that could not run (source or target down, journal), by cause",
            ["route", "cause"],
            registry=r,
        )
        self.connection_failures = Counter(
            "xchange_connection_failures",
            "Failures to reach an endpoint (connect, lost session), by endpoint",
            ["endpoint"],
            registry=r,
        )
        self.journal_latency = Histogram(
            "xchange_journal_seconds",
            "Time of a journal read made for the metrics (its latency as seen from here)",
            buckets=JOURNAL_BUCKETS,
            registry=r,
        )
        r.register(_JournalState(self))
        ProcessCollector(registry=r)
        #: Route -> (cause, retryable) of its last look's trouble, for /readyz.
        self.trouble: dict[str, tuple[str, bool]] = {}
        self._lock = threading.Lock()
        for route in config.routes:
            for outcome in (DELIVERED, DUPLICATE, QUARANTINED, RETRY_LATER):
                self.files.labels(route.name, str(outcome))
            self.documents.labels(route.name)
            self.bytes.labels(route.name)

    def observe(self, result: RouteResult, now: float | None = None) -> None:
        """Count one look's files (those taken through; files only looked at are not)."""
        now = time.time() if now is None else now
        route = self.current().route(result.route)
        for f in result.files:
            if f.outcome in (DELIVERED, DUPLICATE, QUARANTINED, RETRY_LATER):
                self.files.labels(result.route, str(f.outcome)).inc()
            if f.outcome == DELIVERED:
                self.documents.labels(result.route).inc(f.documents)
                self.bytes.labels(result.route).inc(f.bytes)
                if f.arrived is not None:
                    self.delivery.labels(result.route).observe(max(0.0, now - f.arrived))
            elif f.outcome in (QUARANTINED, RETRY_LATER):
                self.failures.labels(result.route, f.cause or "error").inc()
                if f.cause in ("connection", "timeout", "unavailable"):
                    self.connection_failures.labels(route.target.endpoint).inc()
        with self._lock:
            if result.error:
                cause = result.error_kind or "error"
                self.route_errors.labels(result.route, cause).inc()
                if cause in ("connection", "timeout", "unavailable"):
                    self.connection_failures.labels(route.source.endpoint).inc()
                self.trouble[result.route] = (cause, cause in RETRYABLE_KINDS)
            else:
                self.trouble.pop(result.route, None)

    def ready(self) -> list[str]:
        """Why the daemon is not ready (empty: it is)."""
        problems = []
        try:
            started = time.perf_counter()
            self.journal.query(limit=1)
            self.journal_latency.observe(time.perf_counter() - started)
        except XchangeError as exc:
            problems.append(f"journal: {exc.reason}")
            return problems
        waiting: set[str] = set()
        try:
            for name in (r.name for r in self.current().routes):
                for why in waiting_for_a_person(self.journal, name):
                    problems.append(f"{name}: needs a person: {why}")
                    waiting.add(name)
        except XchangeError as exc:
            problems.append(f"journal: {exc.reason}")
        with self._lock:
            for name, (cause, retryable) in sorted(self.trouble.items()):
                if name in waiting:
                    continue
                if cause in NEEDS_A_PERSON:
                    problems.append(f"{name}: needs a person: {cause}")
                elif not retryable:
                    problems.append(f"{name}: {cause} (retrying cannot fix it)")
        return problems

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _JournalState(Collector):
    """Gauges read from the journal at each scrape: files held, quarantined, retrying,
    in hand, the age of the oldest waiting file, and outputs awaiting pickup, per route."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        held = GaugeMetricFamily(
            "xchange_held_files", "Files seen but not complete yet", labels=["route", "reason"]
        )
        states = GaugeMetricFamily(
            "xchange_files_in_state",
            "Files waiting or kept, by journal state",
            labels=["route", "state"],
        )
        sessions = CounterMetricFamily(
            "xchange_sftp_sessions_opened",
            "SFTP sessions opened, by endpoint (each worker's first, then one per reconnect)",
            labels=["endpoint"],
        )
        from xchange.remote import sessions_opened

        for endpoint, count in sorted(sessions_opened().items()):
            sessions.add_metric([endpoint], count)
        oldest = GaugeMetricFamily(
            "xchange_oldest_waiting_seconds",
            "Age of the oldest file waiting for a retry (0: none)",
            labels=["route"],
        )
        # From the journal, not from this process's memory: there after a restart, and
        # the same on every daemon of a group (the delivery of any of them counts).
        last_success = GaugeMetricFamily(
            "xchange_last_success_timestamp_seconds",
            "When the route last delivered a file (Unix time; from the journal)",
            labels=["route"],
        )
        awaiting = GaugeMetricFamily(
            "xchange_outputs_awaiting_pickup",
            "Delivered outputs the partner has not collected yet (overdue: past pickup_within)",
            labels=["route", "overdue"],
        )
        journal = self.metrics.journal
        now = datetime.now(UTC)
        started = time.perf_counter()
        try:
            for route in self.metrics.current().routes:
                reasons: dict[str, int] = {}
                for o in journal.observations.held(route.name).values():
                    kind = _reason_kind(o.reason)
                    reasons[kind] = reasons.get(kind, 0) + 1
                for kind in ("writing", "marker", "manifest", "age", "other"):
                    held.add_metric([route.name, kind], reasons.get(kind, 0))
                for state in (
                    State.QUARANTINED,
                    State.RETRYING,
                    State.PROCESSING,
                    State.DELIVERING,
                ):
                    states.add_metric(
                        [route.name, str(state)], journal.count(route=route.name, states=[state])
                    )
                first = journal.oldest(route.name, State.RETRYING)
                oldest.add_metric(
                    [route.name], 0.0 if first is None else (now - first).total_seconds()
                )
                last = max(
                    (
                        r.updated_at
                        for done in DONE_STATES
                        for r in journal.query(route=route.name, state=done, limit=1)
                    ),
                    default=None,
                )
                if last is not None:
                    last_success.add_metric([route.name], last.timestamp())
                picked = pickups.standing(route, journal, now)
                if picked is not None:
                    late = len(picked.overdue)
                    awaiting.add_metric([route.name, "no"], len(picked.waiting) - late)
                    awaiting.add_metric([route.name, "yes"], late)
        except XchangeError as exc:
            log.warning("metrics.journal_failed", error=exc.reason)
            return
        self.metrics.journal_latency.observe(time.perf_counter() - started)
        yield held
        yield states
        yield oldest
        yield last_success
        yield awaiting
        yield sessions


def _reason_kind(reason: str) -> str:
    """A held file's reason as a bounded label."""
    text = reason.lower()
    if "manifest" in text:
        return "manifest"  # waiting for a partner's manifest, or a manifest waiting
    if "marker" in text:
        return "marker"
    if "changed" in text or "settl" in text or "written" in text:
        return "writing"
    if "age" in text or "old" in text:
        return "age"
    return "other"


def _is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpEndpoint:
    """The daemon's HTTP endpoint (metrics and health) in its own thread."""

    def __init__(
        self,
        metrics: Metrics,
        address: str,
        *,
        token: str | None = None,
        extra: dict[str, Callable[[dict[str, str]], tuple[int, str, bytes]]] | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.metrics = metrics
        self.token = token
        self.extra = extra or {}
        handler = _handler(self)
        self.server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="xchange-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()
        host = self.server.server_address[0]
        host = host.decode() if isinstance(host, bytes) else host
        log.info("http.listening", address=f"{host}:{self.port}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def answer(
        self, path: str, client: str, authorization: str | None, query: str = ""
    ) -> tuple[int, str, bytes]:
        """The response to a GET of ``path`` (``query``: what followed its ``?``)."""
        if not _is_local(client):
            given = (authorization or "").removeprefix("Bearer ").strip()
            if self.token is None or not hmac.compare_digest(given, self.token):
                return 403, "text/plain", b"refused: not a local client (configure a token)\n"
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            problems = self.metrics.ready()
            if problems:
                return 503, "text/plain", ("\n".join(problems) + "\n").encode()
            return 200, "text/plain", b"ready\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()
        if path in self.extra:
            # One value per parameter (the first): the pages take a few plain ones.
            try:
                asked = {k: v[0] for k, v in parse_qs(query, max_num_fields=10).items()}
            except ValueError:  # (more fields than any page takes)
                return 400, "text/plain", b"too many parameters\n"
            return self.extra[path](asked)
        return 404, "text/plain", b"not found\n"


def _handler(endpoint: HttpEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "xchange"

        def do_GET(self) -> None:
            try:
                path, _, query = self.path.partition("?")
                code, kind, body = endpoint.answer(
                    path, self.client_address[0], self.headers.get("Authorization"), query
                )
            except Exception as exc:  # the daemon goes on; the scraper sees a 500
                log.exception("http.failed", error=str(exc))
                code, kind, body = 500, "text/plain", b"internal error\n"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes are not worth a log line each

    return Handler


def start_http(config: AppConfig, journal: Journal) -> HttpEndpoint | None:
    """The endpoint ``[daemon] http`` asks for, listening (None when it is off).

    Raises:
        ConfigError: the token's variable is not set, or the address cannot be bound.
    """
    import os

    from xchange.errors import ConfigError

    address = config.daemon.http
    if address is None:
        return None
    token = None
    if config.daemon.http_token_env:
        token = os.environ.get(config.daemon.http_token_env)
        if not token:
            raise ConfigError(
                [
                    f"{config.source_file}: daemon.http_token_env: environment variable "
                    f"{config.daemon.http_token_env} is not set"
                ]
            )
    from xchange import page

    def status_page(asked: dict[str, str]) -> tuple[int, str, bytes]:
        html = page.render(
            metrics.current(), journal, find=asked.get("find"), find_route=asked.get("route")
        )
        return 200, "text/html; charset=utf-8", html.encode()

    metrics = Metrics(config, journal)
    try:
        endpoint = HttpEndpoint(metrics, address, token=token, extra={"/": status_page})
    except OSError as exc:
        raise ConfigError(
            [f"{config.source_file}: daemon.http: cannot listen on {address}: {exc.strerror}"]
        ) from None
    endpoint.start()
    return endpoint


__all__ = ["HttpEndpoint", "Metrics", "start_http"]
