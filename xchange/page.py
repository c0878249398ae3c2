"""The status page: one small server-rendered HTML page on the daemon's HTTP endpoint
(``/``), refreshed by itself every 30 seconds, readable on a phone at 3 a.m.

Per route: its last delivery, today's deadline, what its partner has not collected yet,
files in hand, held (and why), waiting for a retry (and until when), and the quarantine
with each file's first problem. Above them a search box: ``/?find=EC20261121001``
(``&route=R`` narrows) shows what ``xchange find`` says of the files the term names. Read
only; no JavaScript; every value escaped; no secret is ever on it (only route, file and
endpoint names, and the errors the journal keeps).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from xchange import deadlines, finding
from xchange.config import AppConfig
from xchange.journal import DONE_STATES, Journal, State
from xchange.status import local_time, route_status

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;padding:1em;background:#fafafa;color:#222}
h1{font-size:1.3em;margin:0 0 .5em}section{background:#fff;border:1px solid #ddd;
border-radius:8px;padding:.6em .9em;margin:0 0 1em}h2{font-size:1.1em;margin:.2em 0}
.ok{color:#176b2c}.bad{color:#b00020;font-weight:600}.warn{color:#8a5a00}
ul{padding-left:1.1em;margin:.3em 0}li{margin:.2em 0;word-break:break-word}
small{color:#666}form{margin:0 0 1em}input[type=search]{width:60%;font-size:1em}
"""


def _search(config: AppConfig, journal: Journal, term: str, route: str | None) -> list[str]:
    """The search box, and what it found when a term was given."""
    term = term.strip()[: finding.TERM_MAX]
    names = [r.name for r in config.routes]
    route = route if route in names else None
    options = "".join(
        f"<option value='{escape(n)}'{' selected' if n == route else ''}>{escape(n)}</option>"
        for n in names
    )
    parts = [
        "<form method='get' action='/'>",
        f"<input type='search' name='find' value='{escape(term)}' "
        "placeholder='order number, file name or sha256' aria-label='find'> ",
        f"<select name='route' aria-label='route'><option value=''>every route</option>"
        f"{options}</select> <button type='submit'>find</button></form>",
    ]
    if term:
        parts.append(finding.html(finding.search(journal, term, route=route)))
    return parts


def render(
    config: AppConfig,
    journal: Journal,
    now: datetime | None = None,
    *,
    find: str | None = None,
    find_route: str | None = None,
) -> str:
    """The page as HTML text; with ``find``, what the journal has of the files it names
    (on ``find_route``, if one of the configuration's)."""
    now = now or datetime.now(UTC)
    searching = bool(find and find.strip())
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        # (not while search results are read: they would jump every 30 s)
        "" if searching else "<meta http-equiv='refresh' content='30'>",
        f"<title>xchange status</title><style>{STYLE}</style></head><body>",
        f"<h1>xchange <small>{escape(local_time(now, now))}</small></h1>",
        *_search(config, journal, find or "", find_route),
    ]
    statuses = {s.route: s for s in route_status(config, journal, now)}
    for route in config.routes:
        status = statuses[route.name]
        last = max(
            (
                r.updated_at
                for state in DONE_STATES
                for r in journal.query(route=route.name, state=state, limit=1)
            ),
            default=None,
        )
        # Amber: files wait for a retry; red: quarantined, waiting for a person, or
        # delivered and not collected in time.
        trouble = (
            status.quarantined
            or status.needs_a_person
            or any(w["overdue"] for w in status.awaiting_pickup)
        )
        waiting = status.retrying and not trouble
        parts.append(f"<section id='route-{escape(route.name)}'>")
        parts.append(
            f"<h2 class='{'bad' if trouble else 'warn' if waiting else 'ok'}'>"
            f"{escape(route.name)}</h2>"
            f"<div>last delivery: {escape(local_time(last, now) if last else 'never')}</div>"
        )
        deadline = deadlines.today(route, journal, now)
        if deadline is not None:
            css = "bad" if deadline.missed else ("ok" if deadline.passed else "warn")
            parts.append(f"<div class='{css}'>deadline: {escape(deadline.describe())}</div>")
        if status.pickup is not None:
            late = any(w["overdue"] for w in status.awaiting_pickup)
            parts.append(
                f"<div class='{'bad' if late else 'ok'} pickup'>pickup: "
                f"{escape(status.pickup)}</div>"
            )
        items: list[str] = []
        items += [
            f"<li>in hand: {escape(f['path'])} ({f['size']} bytes), {escape(f['state'])} "
            f"since {escape(f['since_local'])}</li>"
            for f in status.in_hand
        ]
        items += [
            f"<li class='warn'>held: {escape(h['path'])}: {escape(h['reason'])}</li>"
            for h in status.held
        ]
        items += [
            f"<li class='bad'>needs a person: {escape(why)}</li>" for why in status.needs_a_person
        ]
        items += [
            f"<li class='warn'>waiting: #{r['id']} {escape(r['path'])}, next try "
            f"{escape(r['next_try_local'])}: {escape(r['error'] or '')}</li>"
            for r in status.retrying
            if not r["needs_a_person"]
        ]
        for r in journal.query(route=route.name, state=State.QUARANTINED, limit=20):
            items.append(
                f"<li class='bad'>quarantined: #{r.id} {escape(r.path)}: "
                f"{escape(r.error_message or r.error_kind or '')}</li>"
            )
        if status.quarantined > 20:
            items.append(f"<li class='bad'>... {status.quarantined - 20} more in quarantine</li>")
        parts.append(
            f"<ul>{''.join(items)}</ul>" if items else "<div class='ok'>nothing waiting</div>"
        )
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


__all__ = ["render"]
