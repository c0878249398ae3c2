"""Operator commands over the journal and the quarantine: what happened, and what to do
about the files that failed."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from xchange import finding, operators
from xchange.cli.main import (
    command_config,
    config_option,
    fail,
    known_route,
    main,
    open_store,
    reason_option,
)
from xchange.config import AppConfig, duration
from xchange.errors import ConfigError, XchangeError
from xchange.journal import FileRecord, State
from xchange.pipeline import make_pipeline

if TYPE_CHECKING:
    from xchange.results import FileResult

# --------------------------------------------------------------------------- journal


@main.group()
def journal() -> None:
    """What happened to each file."""


def _rows(records: list[Any]) -> None:
    header = f"{'ID':>6}  {'ROUTE':<16} {'STATE':<12} {'TRIES':>5}  {'UPDATED':<20} SOURCE"
    click.echo(header)
    now = datetime.now(UTC)
    for r in records:
        updated = r.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        # A shared journal: the daemon taking it through right now.
        held = (
            f"  (held by {r.owner})"
            if r.owner
            and r.lease_until is not None
            and r.lease_until > now
            and r.state in (State.PROCESSING, State.DELIVERING)
            else ""
        )
        click.echo(
            f"{r.id:>6}  {r.route:<16} {r.state!s:<12} {r.attempts:>5}  {updated:<20} "
            f"{r.path}{held}"
        )


class Moment(click.ParamType[datetime]):
    """A moment, as an operator writes it: a time ago (``24h``, ``7d``, ``90m``,
    ``1h30m``), ``today``, ``yesterday``, a date (``2026-12-01``) or a local time
    (``2026-12-01 02:00``, ``2026-12-01T02:00:00``): one reader for every ``--since`` and
    ``--until``."""

    name = "moment"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        now = datetime.now().astimezone()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if text in ("today", "yesterday"):
            return midnight - timedelta(days=1 if text == "yesterday" else 0)
        try:
            return now - duration(text)
        except ValueError:
            pass
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not a moment: write a time ago (24h, 7d, 90m), today, yesterday, "
                "a date (2026-12-01) or a local time (2026-12-01 02:00)",
                param,
                ctx,
            )
        return when.astimezone() if when.tzinfo is None else when


MOMENT = Moment()


@journal.command("list")
@config_option
@click.option("--route", help="Only this route.")
@click.option("--state", type=click.Choice([s.value for s in State]), help="Only this state.")
@click.option(
    "--since", type=MOMENT, help="Only records updated since: 24h, 7d, yesterday, 2026-12-01."
)
@click.option("--until", type=MOMENT, help="Only records updated before (the same forms).")
@click.option("--name", "pattern", help="Only sources whose name matches this shell pattern.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines for scripts.")
@click.pass_context
def journal_list(
    ctx: click.Context,
    config_path: str | None,
    route: str | None,
    state: str | None,
    since: datetime | None,
    until: datetime | None,
    pattern: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List journal records, newest first."""
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        _check_route(config, store, route)
        records = store.query(
            route=route,
            state=State(state) if state else None,
            since=since.astimezone() if since else None,
            until=until.astimezone() if until else None,
            pattern=pattern,
            limit=limit,
        )
    if as_json:
        for r in records:
            click.echo(json.dumps(r.as_dict(), ensure_ascii=False))
    else:
        _rows(records)


@journal.command("show")
@config_option
@click.argument("file_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def journal_show(ctx: click.Context, config_path: str | None, file_id: int, as_json: bool) -> None:
    """Everything the journal knows about one file."""
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        record = store.get(file_id)
        history = store.history(file_id) if record else []
        actions = store.actions.of_files([file_id]).get(file_id, []) if record else []
    if record is None:
        fail(f"no journal record with id {file_id}", 1)
    data = record.as_dict()
    data["history"] = [
        {"at": h.at.isoformat(), "from_state": h.from_state, "to_state": h.to_state, "note": h.note}
        for h in history
    ]
    data["actions"] = [a.as_dict() for a in actions]
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key in (
        "id",
        "route",
        "endpoint",
        "path",
        "size",
        "sha256",
        "state",
        "attempts",
        "error_kind",
        "error_message",
        "quarantine_path",
        "layout_version",
        "mapping_version",
        "source_encoding",
        "created_at",
        "updated_at",
        "owner",
        "lease_until",
    ):
        if data[key] is not None:
            click.echo(f"{key + ':':<17}{data[key]}")
    click.echo("outputs:")
    pickup = {
        "waiting": "waiting for the partner",
        "collected": "picked up at {picked_up_at}",
        "replaced": "replaced by a later delivery before it was collected",
    }
    for out in data["outputs"]:
        said = pickup.get(out["pickup"] or "", "").format(**out)
        click.echo(
            f"  {out['endpoint']}:{out['path']}  {out['size']} bytes  "
            f"sha256 {out['sha256']}  {out['delivered_at']}" + (f"  ({said})" if said else "")
        )
    click.echo("history:")
    for h in data["history"]:
        click.echo(f"  {h['at']}  {h['from_state'] or '-'} -> {h['to_state']}  {h['note'] or ''}")
    if actions:
        click.echo("actions:")
    for a in data["actions"]:  # (its times as the history's: ISO 8601, UTC)
        detail = f" ({a['detail']})" if a["detail"] else ""
        click.echo(f"  {a['at']}  {a['action']}{detail} by {a['who']}: {a['reason']}")


@main.command("find")
@config_option
@click.argument("term")
@click.option("--route", help="Only this route's files.")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=1000),
    default=finding.LIMIT,
    show_default=True,
    help="Show at most this many files (the newest).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document for scripts.")
@click.pass_context
def find(
    ctx: click.Context,
    config_path: str | None,
    term: str,
    route: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Where did it go: the files TERM names, with their outputs, state and who acted.

    TERM is an order number or other business key (of a route with dedupe_key), a
    source or output file name or shell pattern (orders_2026*.csv), or the first 8 or
    more hex digits of a source's or an output's sha256. Exits 1 when nothing matches.
    """
    if not term.strip():
        raise click.UsageError("TERM is empty: give an order number, a file name or a sha256")
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        _check_route(config, store, route)
        findings = finding.search(store, term, route=route, limit=limit)
    if not findings.found:
        fail(findings.nothing(), 1)
    if as_json:
        click.echo(json.dumps(finding.as_json(findings), ensure_ascii=False, indent=2))
        return
    for line in finding.lines(findings):
        click.echo(line)


@journal.command("actions")
@config_option
@click.option("--since", type=MOMENT, help="Only actions since: 24h, 7d, yesterday, 2026-12-01.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines for scripts.")
@click.pass_context
def journal_actions(
    ctx: click.Context,
    config_path: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """What operators did, newest first: who, when, what (the files, the route), why."""
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        actions = store.actions.recent(since=since.astimezone() if since else None, limit=limit)
    for a in actions:
        click.echo(
            json.dumps(a.as_dict(), ensure_ascii=False) if as_json else operators.describe(a)
        )
    if not actions and not as_json:
        click.echo("(no action recorded)")


@journal.command("prune")
@config_option
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    required=True,
    help="Forget delivered records last touched more than this many days ago.",
)
@reason_option
@click.pass_context
def journal_prune(
    ctx: click.Context, config_path: str | None, days: int, reason: str | None
) -> None:
    """Forget old delivered records (quarantined ones stay until dropped)."""
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        count = store.prune(datetime.now(UTC) - timedelta(days=days))
        operators.record(
            store, "journal prune", reason, detail=f"{count} record(s) older than {days} day(s)"
        )
    click.echo(f"pruned {count} delivered record(s) older than {days} day(s)")


@journal.command("check")
@config_option
@click.pass_context
def journal_check(ctx: click.Context, config_path: str | None) -> None:
    """Check the journal: it opens (not emptied, its write-ahead log not lost after an
    unclean stop), its schema is current, SQLite's integrity check passes. Exit 0 when
    all is well, 3 otherwise."""
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        problems = store.check()
        records = store.count()
    if problems:
        fail("\n".join(f"journal {config.journal.path}: {p}" for p in problems), 3)
    click.echo(f"journal {config.journal.path}: OK ({records} record(s))")


@journal.command("init")
@config_option
@click.option(
    "--fresh",
    is_flag=True,
    required=True,
    help="Accept a new, empty journal in place of the damaged one (kept beside it).",
)
@reason_option
@click.pass_context
def journal_init(
    ctx: click.Context, config_path: str | None, fresh: bool, reason: str | None
) -> None:
    """Start a new, empty journal on purpose: the present file (and its -wal and -shm
    files) are kept beside it as JOURNAL.damaged-TIME. Every file still in a drop folder
    will be taken as new: what was delivered already may be delivered again."""
    config = command_config(ctx, config_path)
    path = config.journal.path
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = []
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            new = Path(f"{path}.damaged-{stamp}{suffix}")
            old.rename(new)
            kept.append(new.name)
    with open_store(config) as store:
        operators.record(
            store,
            "journal init --fresh",
            reason,
            detail=f"the old one kept as {', '.join(kept)}" if kept else None,
        )
    click.echo(
        f"journal {path}: started afresh"
        + (f"; the old one kept as {', '.join(kept)}" if kept else "")
    )


@journal.command("backup")
@config_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def journal_backup(ctx: click.Context, config_path: str | None, dest: Path) -> None:
    """Write a consistent copy of the journal (its write-ahead log included) to DEST, while
    xchange runs. Copying the journal file alone misses what the -wal file holds."""
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        try:
            store.backup(dest)
        except XchangeError as exc:
            fail(f"xchange: {exc}", 3)
    click.echo(f"journal {config.journal.path}: copied to {dest}")


@journal.command("migrate")
@config_option
@click.option(
    "--to",
    "url",
    required=True,
    help="postgresql://user@host:port/database (an empty database; no password here).",
)
@click.option(
    "--password-env",
    default=None,
    help="The environment variable holding the database password.",
)
@click.pass_context
def journal_migrate(
    ctx: click.Context, config_path: str | None, url: str, password_env: str | None
) -> None:
    """Copy this configuration's SQLite journal into PostgreSQL, history and exactly-once
    guarantee included, to grow from one daemon to several. Stop the daemon first; then
    set [journal] url (and password_env) in the configuration."""
    import os

    from xchange.config import JournalConfig
    from xchange.journal import migrate_journal

    config = command_config(ctx, config_path)
    try:
        JournalConfig.model_validate({"path": config.journal.path, "url": url})
    except ValueError as exc:
        fail(f"xchange: --to: {exc}", 2)
    password = None
    if password_env is not None:
        if password_env not in os.environ:
            fail(f"xchange: --password-env: environment variable {password_env} is not set", 2)
        password = os.environ[password_env]
    from xchange.lock import RunLock

    holder = RunLock(config.journal.path.with_suffix(".lock")).holder()
    if holder is not None:
        fail(f"xchange: stop the running xchange first (pid {holder[0]}, {holder[1]})", 4)
    try:
        counts = migrate_journal(config.journal.path, url, password=password)
    except XchangeError as exc:
        fail(f"xchange: {exc.reason}", 3)
    click.echo(
        f"journal {config.journal.path} copied into {url.split('?', 1)[0]}: "
        + ", ".join(f"{n} {table}" for table, n in counts.items() if table != "meta")
    )
    click.echo(f'now set [journal] url = "{url}" in {config.source_file}')


# --------------------------------------------------------------------------- quarantine


@main.group()
def quarantine() -> None:
    """Files that failed: see why, fix, send them again, or give them up."""


def _check_route(config: AppConfig, store: Any, route: str | None) -> None:
    """A ``--route`` filter must name a configured route, or one the journal has records
    of (a route since removed); else exit 2 naming the routes there are."""
    if route is None or route in {r.name for r in config.routes}:
        return
    if store.query(route=route, limit=1):
        return
    store.close()
    known_route(config, route)


def _first_line(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


@quarantine.command("list")
@config_option
@click.option("--route", help="Only this route.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines for scripts.")
@click.option(
    "--by-cause",
    is_flag=True,
    help="Grouped by cause (one incident, not 300 files), each with the id to retry it by.",
)
@click.pass_context
def quarantine_list(
    ctx: click.Context,
    config_path: str | None,
    route: str | None,
    limit: int,
    as_json: bool,
    by_cause: bool,
) -> None:
    """Quarantined files, newest first, with the cause and the first problem."""
    config = command_config(ctx, config_path)
    with open_store(config) as store:
        _check_route(config, store, route)
        if by_cause:
            _list_by_cause(
                store.query(route=route, state=State.QUARANTINED, limit=1_000_000),
                as_json,
                limit,
            )
            return
        records = store.query(route=route, state=State.QUARANTINED, limit=limit)
    heals = _healing(config, records)
    if as_json:
        for r in records:
            will, why = heals[r.id]
            line = {**r.as_dict(), "auto_retry": will, "auto_retry_why": why}
            click.echo(json.dumps(line, ensure_ascii=False))
        return
    click.echo(f"{'ID':>6}  {'ROUTE':<16} {'WHEN':<19}  {'CAUSE':<12} SOURCE / REASON")
    for r in records:
        when = r.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{r.id:>6}  {r.route:<16} {when:<19}  {r.error_kind or '':<12} {r.path}")
        click.echo(f"{'':>6}  {_first_line(r.error_message)}")
        will, why = heals[r.id]
        click.echo(f"{'':>6}  {'re-checked' if will else 'not re-checked'}: {why}")
    if not records:
        click.echo("(nothing in quarantine)")


def _list_by_cause(records: list[FileRecord], as_json: bool, limit: int) -> None:
    from xchange.incidents import by_cause

    causes = by_cause(records)
    for cause in causes[:limit]:
        if as_json:
            click.echo(json.dumps(cause.as_dict(), ensure_ascii=False))
            continue
        first = min(r.updated_at for r in cause.records).astimezone()
        last = max(r.updated_at for r in cause.records).astimezone()
        click.echo(
            f"[{cause.id}] {len(cause.records)} file(s), {', '.join(cause.routes)}, "
            f"{first:%Y-%m-%d %H:%M} - {last:%H:%M}: {cause.text}"
        )
        shown = ", ".join(f"#{r.id} {r.path}" for r in cause.records[:3])
        more = f" and {len(cause.records) - 3} more" if len(cause.records) > 3 else ""
        click.echo(f"         {shown}{more}")
        click.echo(f"         retry: xchange quarantine retry --cause {cause.id} --canary 1")
    if len(causes) > limit and not as_json:
        left = causes[limit:]
        click.echo(
            f"... and {len(left)} more cause(s) of {sum(len(c.records) for c in left)} "
            "file(s), smaller or older: raise --limit to see them"
        )
    if not causes and not as_json:
        click.echo("(nothing in quarantine)")


def _healing(config: AppConfig, records: list[FileRecord]) -> dict[int, tuple[bool, str]]:
    """Per record: whether the daemon (or the next run) re-checks it by itself, and why."""
    from xchange.healing import healing

    routes = {r.name: r for r in config.routes}
    versions: dict[str, tuple[str, str] | None] = {}
    for name in {r.route for r in records} & set(routes):
        try:
            versions[name] = make_pipeline(routes[name], config.formats).versions
        except ConfigError:
            versions[name] = None
    return {r.id: healing(r, routes.get(r.route), versions.get(r.route)) for r in records}


def _get(store: Any, file_id: int) -> FileRecord:
    record: FileRecord | None = store.get(file_id)
    if record is None:
        store.close()
        fail(f"no journal record with id {file_id}", 1)
    return record


@quarantine.command("show")
@config_option
@click.argument("file_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def quarantine_show(
    ctx: click.Context, config_path: str | None, file_id: int, as_json: bool
) -> None:
    """Why a file is in quarantine: the report, where the original is, which config judged it."""
    from xchange.quarantine import Quarantine

    config = command_config(ctx, config_path)
    with open_store(config) as store:
        record = _get(store, file_id)
    if record.state != State.QUARANTINED or not record.quarantine_path:
        fail(f"file #{file_id} is not in quarantine (it is {record.state})", 1)
    report = Quarantine.report_of(Path(record.quarantine_path))
    if as_json:
        click.echo(json.dumps({**record.as_dict(), "report": report}, ensure_ascii=False, indent=2))
        return
    click.echo(report or f"{record.error_kind}: {record.error_message}")


def _named(record: FileRecord, result: FileResult) -> str:
    """A file run again as the command names it: its record, and the record its outcome is
    on when that is another (an edited copy's own, or the one its content was delivered
    on already): ``#2 orders.csv (as #3)``."""
    name = f"#{record.id} {record.path}"
    if result.file_id is not None and result.file_id != record.id:
        name += f" (as #{result.file_id})"
    return name


def _reprocess(
    ctx: click.Context,
    config_path: str | None,
    ids: list[int],
    *,
    force: bool,
    action: str,
    reason: str | None,
    dry_run: bool = False,
    canary: int = 0,
    config: AppConfig | None = None,
) -> None:
    """Run files again through the current layouts and mappings; exit 1 if any still fails.
    The action is noted in the journal first (who, which files, why). With ``canary``, the
    first files go alone: the rest only if every one of them was delivered. With
    ``dry_run``, what would be delivered (and how it differs from what was delivered
    before), touching nothing."""
    if config is None:
        config = command_config(ctx, config_path, secrets=True)
    if dry_run:
        _preview(config, ids, force=force)
        return
    first, rest = (ids[:canary], ids[canary:]) if canary else (ids, [])
    # Each file's action says which part of a canary run it was.
    first_detail = f"canary: {len(first)} of {len(ids)} first" if rest else None
    failed = _rerun(config, first, force=force, action=action, reason=reason, detail=first_detail)
    if canary and failed:
        click.echo(
            f"the canary failed: {len(rest)} other file(s) left in quarantine, untouched",
            err=True,
        )
    elif rest:
        click.echo(f"the canary went through: {len(rest)} more file(s) now")
        failed += _rerun(
            config, rest, force=force, action=action, reason=reason, detail="after the canary"
        )
    if failed:
        sys.exit(1)


def _preview(config: AppConfig, ids: list[int], *, force: bool) -> None:
    from xchange.replay import preview

    store = open_store(config)
    stays = 0
    try:
        for file_id in ids:
            seen = preview(config, store, _get(store, file_id), force=force)
            stays += seen.error is not None
            for line in seen.lines():
                click.echo(line)
    finally:
        store.close()
    click.echo(
        f"(dry run: {len(ids) - stays} would be delivered, {stays} would stay; nothing was "
        "sent, moved or journaled)"
    )
    if stays:
        sys.exit(1)


def _rerun(
    config: AppConfig,
    ids: list[int],
    *,
    force: bool,
    action: str,
    reason: str | None,
    detail: str | None = None,
) -> int:
    """Run the files again; how many still fail."""
    from xchange.results import DELIVERED, DUPLICATE, SKIPPED
    from xchange.runner import Runner

    store = open_store(config)
    runner = Runner(config, store)
    failed = 0
    try:
        records = [_get(store, i) for i in ids]
        details = [d for d in ("--force" if force else None, detail) if d]
        operators.record(store, action, reason, files=records, detail="; ".join(details) or None)
        bar = (
            click.progressbar(records, label="retrying", file=sys.stderr)
            if (sys.stderr.isatty() and len(records) > 1)
            else None
        )
        items = bar if bar is not None else records
        if bar is not None:
            bar.__enter__()
        try:
            for record in items:
                result = runner.reprocess(record, force=force)
                name = _named(record, result)
                if result.outcome == DELIVERED:
                    click.echo(f"{name}: delivered ({', '.join(result.outputs) or 'no documents'})")
                elif result.outcome == DUPLICATE:
                    click.echo(f"{name}: {result.error or 'delivered already'}")
                elif result.outcome == SKIPPED:
                    failed += 1
                    click.echo(f"{name}: {result.error}", err=True)
                else:
                    failed += 1
                    click.echo(f"{name}: {result.outcome}: {result.error}", err=True)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    finally:
        runner.close()
        store.close()
    return failed


@quarantine.command("retry")
@config_option
@click.argument("file_ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every quarantined file.")
@click.option("--cause", help="Every file of one cause (its id from `quarantine list --by-cause`).")
@click.option("--route", help="With --all or --cause: only this route.")
@click.option(
    "--canary",
    type=click.IntRange(min=1),
    help="Send this many first; the rest only if every one of them is delivered.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be delivered; touch nothing.")
@reason_option
@click.pass_context
def quarantine_retry(
    ctx: click.Context,
    config_path: str | None,
    file_ids: tuple[int, ...],
    everything: bool,
    cause: str | None,
    route: str | None,
    canary: int | None,
    dry_run: bool,
    reason: str | None,
) -> None:
    """Send quarantined files again, after fixing the file, a value table or the mapping."""
    if sum((everything, bool(file_ids), cause is not None)) != 1:
        raise click.UsageError("give file IDs, --all or --cause (optionally with --route)")
    if route and not (everything or cause):
        raise click.UsageError("--route goes with --all or --cause")
    ids = list(file_ids)
    config = command_config(ctx, config_path, secrets=True)
    if everything or cause is not None:
        if route is not None:
            known_route(config, route)
        with open_store(config) as store:
            records = store.query(route=route, state=State.QUARANTINED, limit=1_000_000)
        if cause is not None:
            from xchange.incidents import find_cause

            found = find_cause(records, cause)
            if found is None:
                fail(
                    f"no quarantined file has cause {cause!r}: see xchange quarantine list "
                    "--by-cause",
                    1,
                )
            records = found.records
        # Oldest first: the canary is the first file that failed.
        ids = [r.id for r in sorted(records, key=lambda r: r.id)]
        if not ids:
            click.echo("nothing in quarantine")
            return
    _reprocess(
        ctx,
        config_path,
        ids,
        force=False,
        action="quarantine retry",
        reason=reason,
        dry_run=dry_run,
        canary=canary or 0,
        config=config,
    )


@quarantine.command("drop")
@config_option
@click.argument("file_ids", type=int, nargs=-1, required=True)
@reason_option
@click.pass_context
def quarantine_drop(
    ctx: click.Context, config_path: str | None, file_ids: tuple[int, ...], reason: str | None
) -> None:
    """Give quarantined files up: delete their copies; the journal keeps the record."""
    from xchange.errors import UsageError
    from xchange.quarantine import give_up

    config = command_config(ctx, config_path)
    with open_store(config) as store:
        records = [_get(store, i) for i in file_ids]
        try:
            give_up(store, records)
        except UsageError as exc:
            store.close()
            fail(exc.reason, 1)
        operators.record(store, "quarantine drop", reason, files=records)
        for record in records:
            click.echo(f"#{record.id} {record.path}: dropped")


@main.command()
@config_option
@click.argument("file_ids", type=int, nargs=-1, required=True)
@click.option(
    "--force",
    is_flag=True,
    help="Send again on purpose: files delivered already (from their archived copy), and "
    "documents delivered before (repeats), over files of the same name.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would be delivered, and how it differs from what was delivered before; "
    "touch nothing.",
)
@reason_option
@click.pass_context
def reprocess(
    ctx: click.Context,
    config_path: str | None,
    file_ids: tuple[int, ...],
    force: bool,
    dry_run: bool,
    reason: str | None,
) -> None:
    """Run files again: quarantined ones after a fix, delivered ones with --force."""
    _reprocess(
        ctx,
        config_path,
        list(file_ids),
        force=force,
        action="reprocess",
        reason=reason,
        dry_run=dry_run,
    )


@main.command()
@config_option
@click.argument("file_ids", type=int, nargs=-1)
@click.option("--route", help="Only this route's waiting files.")
@reason_option
@click.pass_context
def retry(
    ctx: click.Context,
    config_path: str | None,
    file_ids: tuple[int, ...],
    route: str | None,
    reason: str | None,
) -> None:
    """Make files waiting for a later try due now (after `trust`, or once a target is
    fixed): every waiting file, a route's, or these IDs. The next look takes them: the
    daemon's, or `xchange run --once`."""
    from xchange.runner import Runner

    config = command_config(ctx, config_path)
    if route is not None:
        known_route(config, route)
    store = open_store(config)
    runner = Runner(config, store)
    try:
        if file_ids:
            records = [_get(store, i) for i in file_ids]
            for record in records:
                if record.state != State.RETRYING:
                    runner.close()
                    store.close()
                    fail(f"file #{record.id} is not waiting for a retry (it is {record.state})", 1)
        else:
            records = store.query(route=route, state=State.RETRYING, limit=1_000_000)
        made = runner.due_now(records)
        if made:
            operators.record(store, "retry", reason, files=made)
    finally:
        runner.close()
        store.close()
    for record in made:
        was = (
            record.next_retry_at.astimezone().strftime("%H:%M:%S") if record.next_retry_at else "-"
        )
        click.echo(f"#{record.id} {record.route} {record.path}: due now (was {was})")
    if not made:
        click.echo("no file is waiting for a retry")
    else:
        click.echo("the next look takes them: the daemon's, or `xchange run --once`")


# --------------------------------------------------------------------------- alerts


@main.group()
def alerts() -> None:
    """Check the alert sinks."""


@alerts.command("test")
@config_option
@click.option(
    "--sink", type=click.IntRange(min=1), help="Only this sink (its number, counted from 1)."
)
@click.pass_context
def alerts_test(ctx: click.Context, config_path: str | None, sink: int | None) -> None:
    """Send a test alert through each sink now, whatever the alert window, so that a new
    sink can be checked. Exits 1 if a sink failed."""
    from xchange.alerts import Alerter

    config = command_config(ctx, config_path, secrets=True)
    if not config.alerts.sinks:
        fail("xchange: no alert sinks configured ([[alerts.sinks]])", 2)
    if sink is not None and sink > len(config.alerts.sinks):
        fail(f"xchange: --sink {sink}: there are {len(config.alerts.sinks)} sink(s)", 2)
    with open_store(config) as store:
        results = Alerter(config.alerts, store, config_file=str(config.source_file)).test(sink)
    failed = False
    for number, kind, error in results:
        click.echo(f"sink {number} ({kind}): " + (f"FAILED: {error}" if error else "sent"))
        failed = failed or error is not None
    if failed:
        sys.exit(1)


# --------------------------------------------------------------------------- report


@main.command()
@config_option
@click.option(
    "--since",
    type=MOMENT,
    default="24h",
    show_default=True,
    help="From when: 24h, 7d, yesterday, 2026-12-01, 2026-12-01 02:00.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document for scripts.")
@click.option("--send", is_flag=True, help="Also send it through the alert sinks (a digest).")
@click.pass_context
def report(
    ctx: click.Context, config_path: str | None, since: datetime, as_json: bool, send: bool
) -> None:
    """What each route did: files delivered, quarantined and waiting, outputs, bytes,
    failures by cause, deadlines missed, the slowest files. With --send (from cron every
    morning, say) it also goes out through the alert sinks."""
    from xchange import morning

    config = command_config(ctx, config_path)
    with open_store(config) as store:
        reports = morning.report(config, store, since)
        lines = [f"since {since.astimezone():%Y-%m-%d %H:%M}:"]
        lines += [line for rep in reports for line in rep.lines()]
        if send:
            from xchange.alerts import Alerter

            Alerter(config.alerts, store, config_file=str(config.source_file)).report(
                f"[xchange] report since {since.astimezone():%Y-%m-%d %H:%M}", "\n".join(lines)
            )
    if as_json:
        click.echo(json.dumps(morning.as_json(reports, since), ensure_ascii=False, indent=2))
        return
    for line in lines:
        click.echo(line)
