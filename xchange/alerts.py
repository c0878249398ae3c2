"""Alerts: tell people when files fail, once per route and cause per window, and when a
route works again.

The journal itself failing (its server unreachable, its disk full) is one episode for the
whole daemon, whatever the routes and looks: one failure notice when it begins, sent
without waiting on the journal (each daemon of a group says it: none can know what the
others said), and one "recovered" for the whole group once the journal answers again
(the journal decides which daemon sends it).

Sinks are email (SMTP, STARTTLS or SSL, optional login), webhooks (JSON POST shaped for a
generic receiver, DingTalk, WeCom or Slack) and the log. The ledger of what was sent lives
in the journal, so cron runs and several daemons share one window. A sink that fails is
logged and never stops the exchange.
"""

from __future__ import annotations

import hashlib
import json
import smtplib
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import structlog

from xchange.config import AlertsConfig, EmailSink, LogSink, WebhookSink
from xchange.errors import NEEDS_A_PERSON, JournalError, JournalUnavailable
from xchange.journal import AlertWindow, Journal

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Alert:
    """One message for people."""

    kind: str  #: "failure", "digest", "recovered" or "healed"
    route: str
    cause: str
    title: str
    body: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "route": self.route,
            "cause": self.cause,
            "title": self.title,
            "text": self.body,
        }


def _payload(alert: Alert, shape: str) -> dict[str, Any]:
    text = f"{alert.title}\n\n{alert.body}"
    if shape == "dingtalk":
        return {
            "msgtype": "markdown",
            "markdown": {"title": alert.title, "text": f"### {alert.title}\n\n{alert.body}"},
        }
    if shape == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": f"**{alert.title}**\n{alert.body}"}}
    if shape == "slack":
        return {"text": text}
    return {"source": "xchange", **alert.as_dict()}


def send_webhook(sink: WebhookSink, alert: Alert) -> None:
    url = sink.secret_url.get_secret_value() if sink.secret_url else sink.url
    assert url is not None  # the configuration requires url or url_env
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked at load (http/https)
        url,
        data=json.dumps(_payload(alert, sink.shape), ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "xchange"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=sink.timeout) as response:  # noqa: S310
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def send_email(sink: EmailSink, alert: Alert) -> None:
    message = EmailMessage()
    message["Subject"] = alert.title
    message["From"] = sink.sender
    message["To"] = ", ".join(sink.to)
    message.set_content(alert.body)
    context = ssl.create_default_context(cafile=str(sink.ca_file) if sink.ca_file else None)
    smtp: smtplib.SMTP
    if sink.security == "ssl":
        smtp = smtplib.SMTP_SSL(sink.host, sink.port, timeout=sink.timeout, context=context)
    else:
        smtp = smtplib.SMTP(sink.host, sink.port, timeout=sink.timeout)
    with smtp:
        if sink.security == "starttls":
            smtp.starttls(context=context)
        if sink.user and sink.password is not None:
            smtp.login(sink.user, sink.password.get_secret_value())
        smtp.send_message(message)


def deliver(sink: EmailSink | WebhookSink | LogSink, alert: Alert) -> None:
    """Send one alert through one sink (a log sink: the log event is the alert)."""
    if isinstance(sink, EmailSink):
        send_email(sink, alert)
    elif isinstance(sink, WebhookSink):
        send_webhook(sink, alert)


#: Causes that are the journal failing: one episode for the whole daemon.
JOURNAL_CAUSES = frozenset(e.kind for e in (JournalError, JournalUnavailable))


class Alerter:
    """Decides what to send (via the journal's ledger) and sends it to every sink."""

    def __init__(
        self,
        config: AlertsConfig,
        journal: Journal | None,
        *,
        config_file: str = "",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.journal = journal
        self.config_file = config_file
        self.now = now
        #: The sinks' identity in the ledger's keys: a window opened for other sinks does
        #: not hold back the first alert of a sink added since.
        self._sinks = hashlib.sha256(
            json.dumps([s.model_dump(mode="json") for s in config.sinks], sort_keys=True).encode()
        ).hexdigest()[:8]
        #: Alert windows kept in this process while the journal cannot keep them.
        self._windows: dict[tuple[str, str], tuple[datetime, int]] = {}
        #: The journal's failure this process said and has not seen end: (cause, since).
        self._journal_episode: tuple[str, datetime] | None = None

    def _window_here(self, route: str, cause: str) -> AlertWindow:
        now = self.now()
        sent, held = self._windows.get((route, cause), (None, 0))
        if sent is None or (now - sent).total_seconds() >= self.config.window:
            self._windows[(route, cause)] = (now, 0)
            return AlertWindow(send=True, suppressed=held)
        self._windows[(route, cause)] = (sent, held + 1)
        return AlertWindow(send=False, suppressed=held + 1)

    def failure(
        self, route: str, cause: str, retryable: bool, files: list[str], first_error: str
    ) -> None:
        """Files of a route failed for one cause in this run. When the journal itself
        fails (a full disk, its server away), the alert goes out once for the episode,
        without asking the journal."""
        if cause in JOURNAL_CAUSES:
            if self._journal_episode is not None:
                log.info("alert.held", route=route, cause=cause, episode="journal")
                return
            self._journal_episode = (cause, self.now())
            window = AlertWindow(send=True, suppressed=0)
        else:
            window = self._window(route, cause)
        if window.send:
            self._send_failure(route, cause, retryable, files, first_error, window)
        else:
            log.info("alert.held", route=route, cause=cause, held=window.suppressed)

    def _window(self, route: str, cause: str, *, opens: bool = True) -> AlertWindow:
        """The alert ledger's answer (this process's while the journal cannot give it)."""
        try:
            if self.journal is None:
                raise JournalError("no journal")
            window = self.journal.alerts.window(
                route,
                f"{cause}#{self._sinks}",
                window_s=self.config.window,
                now=self.now(),
                opens=opens,
            )
        except JournalError:
            window = self._window_here(route, cause)
        return window

    def _send_failure(
        self,
        route: str,
        cause: str,
        retryable: bool,
        files: list[str],
        first_error: str,
        window: AlertWindow,
    ) -> None:
        what = (
            "needs a person: the files wait, and go once it is fixed"
            if cause in NEEDS_A_PERSON
            else "transient: will retry"
            if retryable
            else "permanent: quarantined"
        )
        command = (
            f"xchange journal list --route {route} --state retrying"
            if retryable
            else f"xchange quarantine list --route {route}"
        )
        config = f" --config {self.config_file}" if self.config_file else ""
        lines = [
            f"route:  {route}",
            f"files:  {len(files)} ({', '.join(files[:5])}{', ...' if len(files) > 5 else ''})",
            f"cause:  {cause} ({what})",
            f"first:  {first_error.splitlines()[0] if first_error else cause}",
            f"more:   {command}{config}",
        ]
        if window.suppressed:
            lines.append(
                f"also:   {window.suppressed} similar alert(s) held back in the last window"
            )
        self._send(
            Alert(
                "failure",
                route,
                cause,
                f"[xchange] {route}: {len(files)} file(s) failed ({cause})",
                "\n".join(lines),
            )
        )

    def journal_answers(self) -> None:
        """The journal answered again after an episode this process said: "recovered",
        once for the group (the first daemon to record the episode's end sends it)."""
        if self._journal_episode is None or self.journal is None:
            return
        cause, since = self._journal_episode
        try:
            first = self.journal.alerts.announce(
                f"{cause}#{self._sinks}", since=since, now=self.now()
            )
        except JournalError:
            return  # not yet
        self._journal_episode = None
        if not first:
            log.info("alert.recovered_elsewhere", cause=cause)
            return
        seconds = int((self.now() - since).total_seconds())
        self._send(
            Alert(
                "recovered",
                "-",
                cause,
                "[xchange] journal: recovered",
                f"the journal answers again (it failed: {cause}, for about {seconds} s as "
                "seen from here); the files that waited go now",
            )
        )

    def recovered(self, route: str) -> None:
        """A route delivered again: close its open causes with one notice."""
        try:
            keys = self.journal.alerts.resolve(route) if self.journal is not None else []
        except JournalError:
            keys = []
        causes = sorted({key.partition("#")[0] for key in keys})
        if causes:
            self._send(
                Alert(
                    "recovered",
                    route,
                    ",".join(causes),
                    f"[xchange] {route}: recovered",
                    f"route {route} delivers again (was failing: {', '.join(causes)})",
                )
            )

    def healed(self, route: str, delivered: int, tried: int, why: str, still: list[str]) -> None:
        """Quarantined files tried again by themselves: what healed and what did not
        ("sales-returns: 37 of 40 quarantined files delivered after mapping
        oms-to-kingdee-sales-return changed; 3 still fail: ...")."""
        text = f"{route}: {delivered} of {tried} quarantined files delivered"
        if why:
            text += f" after {why}"
        if still:
            text += f"; {len(still)} still fail: {still[0]}"
        lines = [text, *still[1:5]]
        if len(still) > 5:
            lines.append(f"... and {len(still) - 5} more")
        lines.append(f"more:   xchange quarantine list --route {route}")
        self._send(
            Alert(
                "healed",
                route,
                "quarantine",
                f"[xchange] {route}: {delivered} of {tried} quarantined files delivered",
                "\n".join(lines),
            )
        )

    def flush(self) -> None:
        """Send the digest of alerts held back in windows that have ended."""
        if self.journal is None:
            return
        for route, key, held in self.journal.alerts.due_digests(
            window_s=self.config.window, now=self.now()
        ):
            cause = key.partition("#")[0]
            self._send(
                Alert(
                    "digest",
                    route,
                    cause,
                    f"[xchange] {route}: {held} more failure alert(s) ({cause})",
                    f"{held} alert(s) for route {route}, cause {cause}, were held back "
                    f"in the last {int(self.config.window)} s; see xchange journal list "
                    f"--route {route}",
                )
            )

    def deadline_missed(self, route: str, by: str, delivered: int, wanted: int) -> None:
        """Files a route expects did not arrive by their deadline (sent once a day: the
        journal decides)."""
        what = "nothing arrived" if delivered == 0 else f"only {delivered} of {wanted} file(s)"
        config = f" --config {self.config_file}" if self.config_file else ""
        self._send(
            Alert(
                "failure",
                route,
                "deadline",
                f"[xchange] {route}: {what} by {by}",
                f"route:  {route}\nexpected: at least {wanted} file(s) by {by}\n"
                f"arrived: {delivered}\n\nThe partner's export may not have run. "
                f"See: xchange status --route {route}{config}",
            )
        )

    def deadline_met(self, route: str, by: str) -> None:
        """The files of a missed deadline arrived after all."""
        self._send(
            Alert(
                "recovered",
                route,
                "deadline",
                f"[xchange] {route}: recovered (arrived after {by})",
                f"route:  {route}\nThe files expected by {by} have arrived and were delivered.",
            )
        )

    def silence(self, route: str, hours: float, last: str) -> None:
        """A watched route has delivered nothing for too long (one per alert window)."""
        self.failure(
            route, "silence", True, [], f"no file for {hours:g} hours (last delivery: {last})"
        )

    def repeats(self, route: str, files: list[tuple[str, list[str]]]) -> None:
        """Documents delivered before came again and were left out (a route with
        ``repeats = "alert"``; one per alert window)."""
        # (news about the partner, not a failure the route recovers from)
        window = self._window(route, "repeat", opens=False)
        if not window.send:
            log.info("alert.held", route=route, cause="repeat", held=window.suppressed)
            return
        count = sum(len(keys) for _, keys in files)
        lines = [f"route:  {route}"]
        for source, keys in files[:5]:
            shown = "; ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
            lines.append(f"{source}: {shown}")
        lines.append(
            "\nThe partner sent documents delivered before (under another file name, say). "
            "They were left out; the rest of each file was delivered."
        )
        if window.suppressed:
            lines.append(f"also:   {window.suppressed} similar alert(s) held back")
        self._send(
            Alert(
                "failure",
                route,
                "repeat",
                f"[xchange] {route}: {count} document(s) delivered before came again",
                "\n".join(lines),
            )
        )

    def not_collected(
        self, route: str, endpoint: str, within: str, overdue: list[tuple[str, datetime]]
    ) -> None:
        """Delivered outputs the partner has not collected in time (once per episode: the
        journal decides)."""
        config = f" --config {self.config_file}" if self.config_file else ""
        shown = [f"  {name} (delivered {at.astimezone():%Y-%m-%d %H:%M})" for name, at in overdue]
        if len(shown) > 10:
            shown = [*shown[:10], f"  ... and {len(shown) - 10} more"]
        self._send(
            Alert(
                "failure",
                route,
                "pickup",
                f"[xchange] {route}: {len(overdue)} delivered file(s) not collected within "
                f"{within}",
                f"route:  {route}\ntarget: {endpoint}\nnot collected within {within}:\n"
                + "\n".join(shown)
                + "\n\nThe files are there; the partner has not taken them. Their import "
                f"may not have run.\nSee: xchange status --route {route}{config}",
            )
        )

    def collected(self, route: str, endpoint: str) -> None:
        """The partner collected what was overdue."""
        self._send(
            Alert(
                "recovered",
                route,
                "pickup",
                f"[xchange] {route}: recovered (the partner collected the late files)",
                f"route:  {route}\ntarget: {endpoint}\nNothing delivered there is overdue "
                "any more.",
            )
        )

    def pickup_unseen(self, route: str, endpoint: str, reason: str) -> None:
        """The target could not be looked at for pickups (one per alert window)."""
        window = self._window(route, "pickup-look")
        if not window.send:
            log.info("alert.held", route=route, cause="pickup-look", held=window.suppressed)
            return
        self._send(
            Alert(
                "failure",
                route,
                "pickup-look",
                f"[xchange] {route}: cannot see whether the partner collected its files",
                f"route:  {route}\ntarget: {endpoint}\nerror:  {reason}\n\nPickups are "
                "noted again once the target answers.",
            )
        )

    def report(self, title: str, text: str) -> None:
        """The morning report, through every sink (no window: it is asked for)."""
        self._send(Alert("report", "-", "report", title, text))

    def test(self, sink: int | None = None) -> list[tuple[int, str, str | None]]:
        """Send a test alert through every sink (or sink number ``sink``, counted from 1),
        bypassing the alert window: (number, type, what went wrong or None) per sink."""
        alert = Alert(
            "test",
            "-",
            "test",
            "[xchange] test alert",
            f"A test alert from xchange ({self.config_file}), sent by `xchange alerts test`. "
            "Nothing is wrong.",
        )
        results: list[tuple[int, str, str | None]] = []
        for number, target in enumerate(self.config.sinks, start=1):
            if sink is not None and number != sink:
                continue
            try:
                deliver(target, alert)
            except (OSError, smtplib.SMTPException, ValueError) as exc:
                results.append((number, target.type, f"{type(exc).__name__}: {exc}"))
            else:
                results.append((number, target.type, None))
        return results

    def _send(self, alert: Alert) -> None:
        for sink in self.config.sinks:
            try:
                deliver(sink, alert)
            except (OSError, smtplib.SMTPException, ValueError) as exc:
                log.error(
                    "alert.sink_failed",
                    sink=sink.type,
                    route=alert.route,
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                # A failure sent is worth a warning; "recovered" and "healed" are news.
                (log.warning if alert.kind in ("failure", "digest") else log.info)(
                    "alert.sent",
                    sink=sink.type,
                    kind=alert.kind,
                    route=alert.route,
                    cause=alert.cause,
                    title=alert.title,
                )
