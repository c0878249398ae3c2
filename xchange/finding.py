"""Where did it go: what ``xchange find`` and the status page's search say about the files
a term names (an order number or other business key, a source's or an output's name or
pattern, the start of a sha256).

For each file: its record (route, endpoint, name, size, checksum, journal id), how the
term matched it, its state and since when, each output (where, name, size, checksum,
when delivered, and when the receiver picked it up where the journal knows), the keys
the term named, and what operators did to it (who, when, why). The journal finds
(:meth:`xchange.journal.Journal.find`); this module only says it, as text, JSON and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from xchange import operators
from xchange.journal import Found, Journal, State

#: Files one search shows at most by default (``--limit``).
LIMIT = 50
#: The longest term a search takes (the status page's box included).
TERM_MAX = 300
#: Hex digits of a checksum shown in text (JSON has it whole).
SHORT_SUM = 12


@dataclass(frozen=True, slots=True)
class Findings:
    """What a search found: the files (newest first), and whether there were more than
    the limit let through."""

    term: str
    route: str | None
    found: list[Found]
    more: bool

    def nothing(self) -> str:
        """The line that says nothing matched, and what a term may be."""
        where = f" on route {self.route}" if self.route else ""
        return (
            f"nothing in the journal matches {self.term!r}{where} (a term is a business key "
            "of a route with dedupe_key, a source or output file name or shell pattern, or "
            "the first 8 or more hex digits of a sha256)"
        )


def search(
    journal: Journal, term: str, *, route: str | None = None, limit: int = LIMIT
) -> Findings:
    """The files ``term`` names (at most ``limit``; ``more`` says if there were more)."""
    term = term.strip()[:TERM_MAX]
    found = journal.find(term, route=route, limit=limit + 1)
    return Findings(term, route, found[:limit], len(found) > limit)


def _time(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _matched(found: Found) -> str:
    said = []
    for how in found.matched:
        if how == "business key" and found.keys:
            said.append(f"business key {', '.join(found.keys)}")
        elif how.startswith("business key, ") and found.keys:
            said.append(f"business key {', '.join(found.keys)}{how[len('business key') :]}")
        elif how in ("output name", "output sha256") and found.outputs:
            said.append(f"{how} ({', '.join(found.outputs)})")
        else:
            said.append(how)
    return "; ".join(said)


def describe(found: Found) -> tuple[str, list[tuple[str, str]]]:
    """One file found, as a heading and (label, text) rows, for text and HTML alike."""
    r = found.record
    heading = (
        f"#{r.id} {r.route}: {r.endpoint}:{r.path} ({r.size} bytes, sha256 {r.sha256[:SHORT_SUM]})"
    )
    rows = [("matched", _matched(found))]
    state = f"{r.state} since {_time(r.updated_at)} (first seen {_time(r.created_at)}"
    state += f", {r.attempts} attempt(s))" if r.attempts != 1 else ")"
    rows.append(("state", state))
    if r.state in (State.QUARANTINED, State.RETRYING) and (r.error_kind or r.error_message):
        first = (r.error_message or "").splitlines()[0] if r.error_message else ""
        rows.append(("problem", f"{r.error_kind or 'error'}: {first}"))
    if r.quarantine_path and r.state == State.QUARANTINED:
        rows.append(("kept at", r.quarantine_path))
    if r.archive_path:
        rows.append(("archived", r.archive_path))
    for o in r.outputs:
        text = (
            f"{o.endpoint}:{o.path}, {o.size} bytes, sha256 {o.sha256[:SHORT_SUM]}, "
            f"delivered {_time(o.delivered_at)}"
        )
        taken = o.picked_up_at
        if taken is not None:
            text += f", picked up at {_time(taken)}"
        rows.append(("output (matched)" if o.path in found.outputs else "output", text))
    if not r.outputs:
        rows.append(("outputs", "none delivered"))
    rows += [("action", operators.describe(a, file=False)) for a in found.actions]
    return heading, rows


def lines(findings: Findings) -> list[str]:
    """The findings as text, a file a paragraph."""
    out: list[str] = []
    for found in findings.found:
        heading, rows = describe(found)
        if out:
            out.append("")
        out.append(heading)
        out += [f"  {label + ':':<17} {text}" for label, text in rows]
    if findings.more:
        out += ["", _more(findings)]
    return out


def _more(findings: Findings) -> str:
    return (
        f"(more than {len(findings.found)} files match: the newest shown; narrow with "
        "--route or a longer term, or raise --limit)"
    )


def as_json(findings: Findings) -> dict[str, Any]:
    """The findings as one JSON document: each file's whole record (times in ISO 8601,
    UTC), how it matched, the keys and outputs the term named, its actions."""
    files = []
    for found in findings.found:
        data = found.record.as_dict()
        for out, o in zip(data["outputs"], found.record.outputs, strict=True):
            out["matched"] = o.path in found.outputs  # (and pickup, picked_up_at: the record's)
        data["matched"] = list(found.matched)
        data["keys"] = list(found.keys)
        data["actions"] = [a.as_dict() for a in found.actions]
        files.append(data)
    return {"term": findings.term, "route": findings.route, "files": files, "more": findings.more}


def html(findings: Findings) -> str:
    """The findings as an HTML fragment, every value escaped."""
    if not findings.found:
        return f"<section id='found'><p class='warn'>{escape(findings.nothing())}</p></section>"
    parts = ["<section id='found'>"]
    for found in findings.found:
        heading, rows = describe(found)
        parts.append(f"<h2>{escape(heading)}</h2><ul>")
        parts += [f"<li><b>{escape(label)}</b>: {escape(text)}</li>" for label, text in rows]
        parts.append("</ul>")
    if findings.more:
        parts.append(f"<p><small>{escape(_more(findings))}</small></p>")
    parts.append("</section>")
    return "".join(parts)


__all__ = ["LIMIT", "TERM_MAX", "Findings", "as_json", "describe", "html", "lines", "search"]
