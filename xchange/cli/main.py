"""The ``xchange`` command: a thin click layer over the library.

This is the only module that imports click.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click
import structlog

from xchange import __version__
from xchange.alerts import Alerter
from xchange.archives import convert_file
from xchange.config import AppConfig, RouteConfig, SFTPEndpoint, load_config
from xchange.errors import (
    ConfigError,
    JournalError,
    LockHeld,
    ValidationFailed,
    XchangeError,
    one_line,
)
from xchange.journal import Journal, open_journal
from xchange.lock import RunLock
from xchange.log import configure_logging, register_secret
from xchange.pgp import as_read as pgp_as_read
from xchange.pgp import problems as pgp_problems
from xchange.pipeline import CopyPipeline, Pipeline, make_pipeline
from xchange.remote import openssh
from xchange.results import (
    EXIT_CONFIG,
    EXIT_LOCKED,
    EXIT_NOT_DELIVERED,
    EXIT_NOT_TAKEN,
    EXIT_QUARANTINED,
    exit_code,
)
from xchange.runner import Runner
from xchange.sink import Output, Sink

F = TypeVar("F", bound=Callable[..., Any])


_LOGGING = "xchange.logging"


def _logging(ctx: click.Context, **changes: Any) -> None:
    """Apply the logging options given so far (the group's, then the command's)."""
    settings = ctx.meta.setdefault(
        _LOGGING, {"log_format": "auto", "verbose": False, "log_timezone": None, "level": "info"}
    )
    settings.update({k: v for k, v in changes.items() if v is not None})
    log_format = settings["log_format"]
    configure_logging(
        json=None if log_format == "auto" else log_format == "json",
        level="debug" if settings["verbose"] else settings["level"],
        timezone=settings["log_timezone"],
    )


@contextlib.contextmanager
def _progress(in_hand: Callable[[float], list[str]], every: float = 1.0) -> Iterator[None]:
    """While a run goes on, one line on the terminal, rewritten every second, saying the
    files in hand and how far they got (once one has taken two seconds): a person at a
    terminal sees a long upload move. Never in a log: only where stderr is a terminal."""
    done = threading.Event()

    def show() -> None:
        said = False
        while not done.wait(every):
            waiting = in_hand(2.0)
            if waiting:
                click.echo("\r\x1b[K" + "; ".join(waiting)[:200], err=True, nl=False)
                said = True
        if said:
            click.echo("\r\x1b[K", err=True, nl=False)

    shower = threading.Thread(target=show, name="xchange-progress", daemon=True)
    shower.start()
    try:
        yield
    finally:
        done.set()
        shower.join(timeout=5)


def _at_a_terminal(ctx: click.Context) -> bool:
    """Whether the log goes to a person at a terminal (console lines on a tty, not -v)."""
    settings = ctx.meta.get(_LOGGING, {})
    return (
        sys.stderr.isatty()
        and settings.get("log_format", "auto") != "json"
        and not settings.get("verbose")
    )


def _log_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None or value is False:
        return value
    from click.core import ParameterSource

    if ctx.parent is not None and ctx.get_parameter_source(str(param.name)) in (
        ParameterSource.ENVIRONMENT,
        ParameterSource.DEFAULT,
    ):
        return value  # the group took the environment's value; a flag given there stays
    _logging(ctx, **{str(param.name): value})
    return value


def _check_timezone(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise click.BadParameter(f"{value!r} is not a time zone (e.g. Asia/Shanghai)") from None
    return _log_option(ctx, param, value)


def config_option(func: F) -> F:
    """``--config``, ``--log-format``, ``--log-timezone`` and ``-v`` on the group and on
    each command, before or after the command's name (the command's win)."""
    func = click.option(
        "-v",
        "--verbose",
        is_flag=True,
        default=None,
        expose_value=False,
        callback=_log_option,
        help="Log debug events too.",
    )(func)
    func = click.option(
        "--log-timezone",
        envvar="XCHANGE_LOG_TIMEZONE",
        expose_value=False,
        callback=_check_timezone,
        help="Time zone of console log times (default: local time; JSON is UTC).",
    )(func)
    func = click.option(
        "--log-format",
        type=click.Choice(["auto", "console", "json"]),
        envvar="XCHANGE_LOG_FORMAT",
        expose_value=False,
        callback=_log_option,
        help="Log lines on stderr: readable on a terminal, JSON otherwise (auto).",
    )(func)
    return click.option(
        "--config",
        "config_path",
        envvar="XCHANGE_CONFIG",
        type=click.Path(dir_okay=False),
        help="Configuration file (TOML). Default: $XCHANGE_CONFIG.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="xchange")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """xchange: move business documents between systems that only speak files."""
    ctx.obj = {"config_path": config_path}
    _logging(ctx)


#: ``--reason`` of the commands that act (kept in the journal with who and when).
reason_option = click.option(
    "--reason",
    metavar="TEXT",
    help="Why: kept in the journal with who ran the command and when (`xchange find`, "
    "`journal show`); without it the journal says 'no reason given'.",
)


def act(config: AppConfig, action: str, reason: str | None, **kwargs: Any) -> None:
    """Note an action in the configuration's journal (:func:`xchange.operators.record`);
    a journal that cannot be opened or written is said, and the command goes on (what
    it did is done)."""
    from xchange import operators

    try:
        with open_journal(config.journal) as journal:
            operators.record(journal, action, reason, **kwargs)
    except (ConfigError, JournalError) as exc:
        said = "; ".join(exc.problems) if isinstance(exc, ConfigError) else exc.reason
        click.echo(f"xchange: {action} was not noted in the journal: {said}", err=True)


def fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def open_store(config: AppConfig) -> Journal:
    """The configuration's journal, or exit 3 with the reason (a damaged journal, a
    folder that cannot be written, a full disk)."""
    try:
        return open_journal(config.journal)
    except ConfigError as exc:  # (a database that does not exist, a login refused)
        fail("\n".join(exc.problems), EXIT_CONFIG)
    except JournalError as exc:
        fail(f"xchange: {exc}", EXIT_NOT_DELIVERED)


def command_config(
    ctx: click.Context, config_path: str | None, *, secrets: bool = False
) -> AppConfig:
    """The command's configuration, or exit 2 naming each problem. ``secrets``: the
    command connects or alerts, so every ``*_env`` variable must be set; commands that
    only read the journal or files work without them."""
    path = config_path or ctx.obj.get("config_path")
    if not path:
        raise click.UsageError("no configuration: pass --config FILE or set XCHANGE_CONFIG")
    try:
        return _loaded(path, secrets=secrets)
    except ConfigError as exc:
        fail("\n".join(exc.problems), EXIT_CONFIG)


def known_route(config: AppConfig, name: str) -> RouteConfig:
    """The route named ``name``, or exit 2 naming the routes there are."""
    try:
        return config.route(name)
    except ConfigError as exc:
        fail("\n".join(exc.problems), EXIT_CONFIG)


def _loaded(path: str, *, secrets: bool = True) -> AppConfig:
    """The configuration at ``path``, its secrets known to the log's redaction."""
    config = load_config(path, secrets="require" if secrets else "defer")
    found: list[Any] = []
    for endpoint in config.endpoints.values():
        if isinstance(endpoint, SFTPEndpoint):
            found += [endpoint.password, endpoint.key_passphrase]
    for sink in config.alerts.sinks:
        found += [getattr(sink, "password", None), getattr(sink, "secret_url", None)]
    if config.pgp is not None:
        found.append(config.pgp.passphrase)
    for secret in found:
        if secret is not None:
            register_secret(secret.get_secret_value())
    return config


def _pipeline(config: AppConfig, route: str) -> Pipeline | CopyPipeline:
    try:
        return make_pipeline(config.route(route), config.formats)
    except ConfigError as exc:
        fail("\n".join(exc.problems), EXIT_CONFIG)


# --------------------------------------------------------------------------- check


@main.command()
@config_option
@click.option(
    "--remote",
    is_flag=True,
    help="Also connect to every SFTP endpoint and say what its server does differently.",
)
@click.pass_context
def check(ctx: click.Context, config_path: str | None, remote: bool) -> None:
    """Validate a configuration and every layout and mapping it uses."""
    config = command_config(ctx, config_path)
    from xchange.daemon import check_schedules

    problems: list[str] = check_schedules(config)
    superseded: list[str] = []
    for route in config.routes:
        try:
            pipeline = make_pipeline(route, config.formats)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if isinstance(pipeline, Pipeline):
            superseded.extend(n for n in pipeline.superseded() if n not in superseded)
    if remote:
        problems.extend(config.missing_secrets)
    problems.extend(pgp_problems(config))
    if problems:
        fail("\n".join(problems), EXIT_CONFIG)
    names = ", ".join(r.name for r in config.routes)
    click.echo(
        f"{config.source_file}: OK: {len(config.routes)} route(s) ({names}), "
        f"{len(config.endpoints)} endpoint(s)"
    )
    for line in superseded:
        click.echo(f"note: {line}")
    for line in config.missing_secrets:
        # The service has its own environment (EnvironmentFile): only a note here.
        click.echo(f"note: {line} here (run and check --remote need it)")
    if remote and not _describe_servers(config):
        sys.exit(EXIT_NOT_DELIVERED)


def _describe_servers(config: AppConfig) -> bool:
    """Connect to each SFTP endpoint and print its server's traits; False if one failed."""
    from xchange.remote.sftp import SFTPRemote

    ok = True
    for name, cfg in config.endpoints.items():
        if not isinstance(cfg, SFTPEndpoint):
            continue
        server = SFTPRemote(name, cfg)
        try:
            lines = server.describe()
        except XchangeError as exc:
            click.echo(f"{name}: cannot connect: {exc.reason}")
            ok = False
            continue
        finally:
            server.close()
        click.echo(f"{name} ({cfg.user}@{cfg.host}:{cfg.port}):")
        for line in lines:
            click.echo(f"  {line}")
    return ok


# --------------------------------------------------------------------------- run


@contextmanager
def _stop_on_signals(
    stop: threading.Event, in_hand: Callable[[], list[str]] = list, *, repeat: bool = False
) -> Iterator[None]:
    """First SIGTERM/SIGINT: finish the file in hand, take no new one (and say which
    files those are). Second: end the OpenSSH clients, log ``exit_now``, exit now."""
    log = structlog.get_logger("xchange.cli")

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            exit_now(signum)
        stop.set()
        hand = in_hand()
        # Said in the log always (cron's run too); in words where a person reads it.
        # (from a thread: the handler may have interrupted a log line being written)
        said = {"signal": signal.Signals(signum).name, "in_hand": hand or None}
        threading.Thread(target=lambda: log.info("run.stopping", **said), daemon=True).start()
        if sys.stderr.isatty():
            click.echo("stopping: finishing the files in hand (signal again to exit now)", err=True)
            for line in hand:
                click.echo(f"  finishing {line}", err=True)
        if repeat:
            threading.Thread(target=say_finishing, daemon=True).start()

    def exit_now(signum: int) -> NoReturn:
        # Whatever was being written is under a hidden temporary name, never under a final
        # one; the journal resumes it at the next start. An OpenSSH client would go on
        # writing it after xchange has gone: ended first.
        ended = openssh.end_children()
        with suppress(Exception):  # nothing may keep the process from exiting
            log.warning(
                "exit_now",
                signal=signal.Signals(signum).name,
                in_hand=files_in_hand(),
                openssh_clients_ended=len(ended),
            )
        os._exit(128 + signum)

    def files_in_hand() -> list[str] | None:
        # From another thread, given a second: this handler may have interrupted the main
        # thread while it holds the lock the list is read under.
        found: list[list[str]] = []
        reader = threading.Thread(target=lambda: found.append(in_hand()), daemon=True)
        reader.start()
        reader.join(timeout=1.0)
        return found[0] if found else None

    def say_finishing() -> None:
        # A long file: say how far it got every 5 s until the process exits.
        while True:
            time.sleep(5)
            for line in in_hand():
                click.echo(f"  still finishing {line}", err=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def _reload_on_sighup(reload: Callable[[], None]) -> Iterator[None]:
    """SIGHUP (``xchange reload``, systemd's ExecReload): load the configuration again."""

    def handler(signum: int, frame: FrameType | None) -> None:
        reload()

    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def _no_reload() -> None:
    click.echo("reload ignored: run --once reads its configuration once", err=True)


@main.command()
@config_option
@click.option("--once", is_flag=True, help="Process what is ready now, then exit (for cron).")
@click.option("--route", "routes", multiple=True, help="Only this route (repeatable, --once).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --once: say what would be taken, by which route, under which target names; "
    "touch nothing.",
)
@click.pass_context
def run(
    ctx: click.Context, config_path: str | None, once: bool, routes: tuple[str, ...], dry_run: bool
) -> None:
    """Run the exchanges: once (cron), or as a daemon in the foreground until SIGTERM.

    Exit codes with --once: 0 all delivered, 1 some files quarantined, 2 configuration
    error, 3 some files could not be delivered yet (they stay for the next run),
    4 another run of this configuration holds the lock, 5 all delivered but a drop folder
    holds files no route takes. --dry-run exits with the code the run would give. The
    daemon exits 0 after a clean stop.
    """
    config = command_config(ctx, config_path, secrets=True)
    for name in routes:
        known_route(config, name)
    if routes and not once:
        raise click.UsageError("--route goes with --once; the daemon runs every route")
    if dry_run:
        if not once:
            raise click.UsageError("--dry-run goes with --once")
        _dry_run(config, list(routes))
        return
    if once and _at_a_terminal(ctx):
        # A person reads this: the summary lines are the news; each file's events wait
        # behind -v (warnings and errors still show). Cron's logs keep them all.
        _logging(ctx, level="warning")
    stop = threading.Event()
    code = 0
    try:
        lock = RunLock(config.journal.path.with_suffix(".lock"), "run" if once else "daemon")
        # Who has files in hand (said when a stop waits for them): the run's runner, or
        # the daemon's (the daemon also logs it every 5 s).
        hands: dict[str, Callable[[], list[str]]] = {}
        in_hand = lambda: hands["in_hand"]() if hands else []  # noqa: E731
        with lock, _stop_on_signals(stop, in_hand, repeat=once):
            if not once:
                _run_daemon(config, stop, hands)
            else:
                with open_journal(config.journal) as journal:
                    runner = Runner(config, journal, stop=stop)
                    hands["in_hand"] = runner.in_hand
                    shown = _progress(runner.in_hand) if _at_a_terminal(ctx) else None
                    try:
                        with _reload_on_sighup(_no_reload), shown or contextlib.nullcontext():
                            results = runner.run_once(list(routes) or None)
                    finally:
                        runner.close()
                    for result in results:
                        click.echo(result.summary())
                    code = exit_code(results)
                    if not routes and _say_strays(config) and code == 0:
                        code = EXIT_NOT_TAKEN
    except LockHeld as exc:
        fail(f"xchange: {exc}", EXIT_LOCKED)
    except ConfigError as exc:
        fail("\n".join(exc.problems), EXIT_CONFIG)
    except XchangeError as exc:
        _alert_not_run(config, exc)
        fail(f"xchange: could not run: {exc}", EXIT_NOT_DELIVERED)
    sys.exit(code)


def _run_daemon(
    config: AppConfig, stop: threading.Event, hands: dict[str, Callable[[], list[str]]]
) -> None:
    """The daemon until ``stop``. A journal whose server cannot be reached at start (a
    restart, a network cut) is waited for, said and alerted, never a reason to exit."""
    from xchange.daemon import Daemon, check_schedules, when_journal_answers
    from xchange.metrics import start_http

    if problems := check_schedules(config):
        raise ConfigError(problems)
    path = str(config.source_file)
    starting = Alerter(config.alerts, None, config_file=str(config.source_file))
    journal = when_journal_answers(
        lambda: open_journal(config.journal),
        stop,
        lambda exc: _alert_not_run(config, exc, starting),
    )
    if journal is None:
        return
    starting.journal = journal
    starting.journal_answers()  # (a "recovered" if the start had to wait for it)
    try:
        http = start_http(config, journal)
        try:
            daemon = when_journal_answers(
                lambda: Daemon(
                    config,
                    journal,
                    stop=stop,
                    load=lambda: _loaded(path),
                    on_result=http.metrics.observe if http is not None else None,
                ),
                stop,
                lambda exc: None,
            )
            if daemon is None:
                return
            running = daemon
            hands["in_hand"] = lambda: running.runner.in_hand()  # (a reload replaces it)
            if http is not None:
                http.metrics.current = lambda: running.config  # reloads included
            with _reload_on_sighup(daemon.request_reload):
                daemon.run()
        finally:
            if http is not None:
                http.stop()
    finally:
        journal.close()


@main.command()
@config_option
@reason_option
@click.pass_context
def reload(ctx: click.Context, config_path: str | None, reason: str | None) -> None:
    """Make the running daemon load its configuration, layouts and mappings again.

    The files are checked here first; the daemon checks them again and keeps what it has
    if they are not sound. Quarantined files the new versions judge differently are
    re-checked at each route's next look.
    """
    config = command_config(ctx, config_path)
    for route in config.routes:
        _pipeline(config, route.name)
    holder = RunLock(config.journal.path.with_suffix(".lock")).holder()
    if holder is None or holder[1] != "daemon":
        what = f" (pid {holder[0]} is a run --once)" if holder else ""
        fail(f"xchange: no daemon of {config.source_file} is running{what}", EXIT_NOT_DELIVERED)
    pid = holder[0]
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        fail(f"xchange: cannot signal the daemon (pid {pid}): {exc.strerror}", EXIT_NOT_DELIVERED)
    act(config, "reload", reason, detail=f"{config.source_file}, daemon pid {pid}")
    click.echo(f"asked the daemon (pid {pid}) to reload {config.source_file}")


def _dry_run(config: AppConfig, routes: list[str]) -> None:
    """What `run --once` would do now, touching nothing (no lock, no journal change, no
    file moved or written)."""
    from xchange.dryrun import plan

    with open_store(config) as journal:
        plans = plan(config, journal, routes or None)
    for route_plan in plans:
        if route_plan.error:
            click.echo(f"{route_plan.route}: could not look: {route_plan.error}")
        for planned in route_plan.files:
            click.echo(planned.line())
        if not route_plan.files and not route_plan.error:
            click.echo(f"{route_plan.route}: nothing to take")
    stray = _say_strays(config)
    said = [p.verdict for r in plans for p in r.files]
    click.echo(
        f"(dry run: {said.count('take')} would be delivered, {said.count('quarantine')} "
        "quarantined; nothing was taken, written, moved or journaled)"
    )
    # The codes a run would give: cron and scripts learn from the dry run too.
    if any(r.error for r in plans) or "waiting" in said:
        sys.exit(EXIT_NOT_DELIVERED)
    if "quarantine" in said:
        sys.exit(EXIT_QUARANTINED)
    if stray:
        sys.exit(EXIT_NOT_TAKEN)


def _say_strays(config: AppConfig) -> bool:
    """Say the files in local drop folders that no route takes; whether there are any."""
    from xchange.status import strays

    found = strays(config)
    for stray in found:
        click.echo(
            f"not taken by any route: {stray.endpoint}: {stray.path} ({stray.size} bytes): "
            f"{stray.hint}"
        )
    return bool(found)


def _alert_not_run(config: AppConfig, exc: XchangeError, alerter: Alerter | None = None) -> None:
    """The run could not start (its journal cannot be opened, say): alert every route's
    people, without the journal."""
    alerter = alerter or Alerter(config.alerts, None, config_file=str(config.source_file))
    for route in config.routes:
        alerter.failure(route.name, exc.kind, True, [], f"could not run: {exc.reason}")


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """What each route is doing and waiting for: files in hand, files held (and why),
    retries and when they are due (local time), quarantine, and files in local drop
    folders that no route takes."""
    from xchange.status import as_dicts, local_time, route_status, strays

    config = command_config(ctx, config_path)
    journal = open_store(config)
    now = datetime.now(UTC)
    try:
        routes = route_status(config, journal, now)
    finally:
        journal.close()
    found = strays(config)
    if as_json:
        click.echo(json.dumps(as_dicts(routes, found), ensure_ascii=False, indent=2))
        return
    for item in routes:
        in_hand = f"{len(item.in_hand)} in hand, " if item.in_hand else ""
        click.echo(
            f"{item.route}: {in_hand}{len(item.held)} held, {len(item.retrying)} "
            f"retrying, {item.quarantined} quarantined"
        )
        if item.deadline:
            click.echo(f"  deadline: {item.deadline}")
        if item.pickup:
            click.echo(f"  pickup: {item.pickup}")
        for w in item.awaiting_pickup[:10]:
            late = "NOT COLLECTED in time, " if w["overdue"] else ""
            click.echo(
                f"  awaiting pickup: {w['output']} ({late}delivered "
                f"{local_time(datetime.fromisoformat(w['delivered_at']), now)}, from "
                f"#{w['file_id']} {w['source']})"
            )
        if len(item.awaiting_pickup) > 10:
            click.echo(f"  ... and {len(item.awaiting_pickup) - 10} more awaiting pickup")
        for f in item.in_hand:
            by = f" by {f['owner']}" if f.get("owner") else ""
            click.echo(
                f"  in hand: #{f['id']} {f['path']} ({f['size']} bytes): {f['state']}{by} "
                f"since {f['since_local']}"
            )
        for h in item.held:
            click.echo(f"  held: {h['path']} ({h['size']} bytes): {h['reason']}")
        for r in item.retrying:
            click.echo(
                f"  retrying: #{r['id']} {r['path']}: next try {r['next_try_local']}: {r['error']}"
            )
    for stray in found:
        click.echo(
            f"not taken by any route: {stray.endpoint}: {stray.path} ({stray.size} bytes): "
            f"{stray.hint}"
        )


# --------------------------------------------------------------------------- convert / validate


#: The longest line validate and convert print for one problem (the report file given
#: with --report has every message whole).
LINE_LIMIT = 500

report_option = click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the whole report here (each problem's message uncut).",
)


def _convert(
    config: AppConfig, route: str, file: Path, folder: Path | None, report_path: Path | None
) -> list[Output]:
    """Convert FILE, streaming; outputs go to ``folder`` (or memory); exit 1 with the report
    (one bounded line a problem; ``report_path`` gets the whole text). Warnings (text that
    looks like mojibake, say) go to stderr."""
    pipeline = _pipeline(config, route)
    try:
        with (
            open(file, "rb") as stream,
            pgp_as_read(config, config.route(route), stream, file.name) as (reading, named),
        ):
            conversion = convert_file(
                pipeline,
                config.route(route),
                reading,
                named,
                datetime.now(UTC).astimezone(),
                Sink(folder),
            )
        for warning in conversion.warnings:
            click.echo(one_line(f"{file.name}: warning: {warning}", LINE_LIMIT), err=True)
        if conversion.filtered_note():
            click.echo(f"{file.name}: {conversion.filtered_note()}", err=True)
        if report_path is not None:
            report_path.write_text(
                "".join(f"{file.name}: warning: {w}\n" for w in conversion.warnings),
                encoding="utf-8",
            )
        return conversion.outputs
    except ValidationFailed as exc:
        report = exc.report
        shown = f"{report.summary()}\n\n{report.text(LINE_LIMIT)}"
        _fail_with(report.text(), shown, report.cut(LINE_LIMIT), report_path)
    except XchangeError as exc:
        whole = f"{file}: {exc.kind}: {exc}"
        shown = one_line(whole, LINE_LIMIT)
        _fail_with(whole, shown, shown != whole, report_path)


def _fail_with(whole: str, shown: str, cut: bool, report_path: Path | None) -> NoReturn:
    """Exit 1 showing ``shown`` (bounded lines); ``report_path`` gets ``whole``, else, if
    ``shown`` left something out, the user is told how to see it."""
    if report_path is not None:
        report_path.write_text(whole + "\n", encoding="utf-8")
        fail(f"{shown}\n(the whole text: {report_path})", 1)
    hint = "\n(lines cut at ... are whole in the file that --report FILE writes)" if cut else ""
    fail(shown + hint, 1)


@main.command()
@config_option
@click.option("--route", required=True, help="Route whose layouts and mapping to use.")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the outputs here (default: stdout when there is one).",
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@report_option
@click.pass_context
def convert(
    ctx: click.Context,
    config_path: str | None,
    route: str,
    output_dir: Path | None,
    file: Path,
    report_path: Path | None,
) -> None:
    """Parse, validate, map and write FILE as ROUTE would, without delivering it.

    Prints the validation report and exits 1 if the file breaks a rule.
    """
    config = command_config(ctx, config_path)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    outputs = _convert(config, route, file, output_dir, report_path)
    if output_dir is None:
        if len(outputs) != 1:
            # The file is fine; the command needs a folder for what it made (usage: 2).
            names = ", ".join(o.name for o in outputs) or "none"
            raise click.UsageError(
                f"{file.name} converts to {len(outputs)} output files ({names}): "
                "pass -o DIR to write them"
            )
        sys.stdout.buffer.write(outputs[0].data)
        return
    for out in outputs:
        click.echo(f"{output_dir / out.name} ({out.size} bytes, {out.documents} documents)")


@main.command()
@config_option
@click.option("--route", required=True, help="Route whose layouts and mapping to use.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@report_option
@click.pass_context
def validate(
    ctx: click.Context, config_path: str | None, route: str, file: Path, report_path: Path | None
) -> None:
    """Check FILE against ROUTE's layouts and mapping; print the report, exit 1 if broken."""
    config = command_config(ctx, config_path)
    with tempfile.TemporaryDirectory(prefix="xchange-validate-") as scratch:
        outputs = _convert(config, route, file, Path(scratch), report_path)
    docs = sum(o.documents for o in outputs)
    pipeline = _pipeline(config, route)
    # What an output holds: documents of a nested target layout, rows of a flat one.
    target = getattr(pipeline, "target", None)
    noun = "row(s)" if target is not None and target.shape == "rows" else "document(s)"
    click.echo(f"{file}: OK: {docs} {noun} in {len(outputs)} output file(s)")


# --------------------------------------------------------------------------- trust


@main.command()
@config_option
@click.argument("endpoint")
@click.option("--yes", is_flag=True, help="Pin without asking.")
@click.option(
    "--replace",
    is_flag=True,
    help="Replace a key pinned before for this host (a changed key is refused without it).",
)
@reason_option
@click.pass_context
def trust(
    ctx: click.Context,
    config_path: str | None,
    endpoint: str,
    yes: bool,
    replace: bool,
    reason: str | None,
) -> None:
    """Show an SFTP server's host key fingerprint and pin it in known_hosts.

    A host with a key pinned already is shown the old and the new fingerprint; the new
    key replaces the old one only with --replace (and a confirmation, unless --yes).
    """
    from xchange.remote.sftp import SFTPRemote, fingerprint

    config = command_config(ctx, config_path)
    cfg = config.endpoints.get(endpoint)
    if not isinstance(cfg, SFTPEndpoint):
        raise click.BadParameter(f"{endpoint!r} is not an SFTP endpoint of this configuration")
    remote = SFTPRemote(endpoint, cfg)
    try:
        key = remote.fetch_host_key()
        pinned = remote.pinned_host_keys()
    except XchangeError as exc:
        fail(f"xchange: {exc}", EXIT_NOT_DELIVERED)
    where = f"{cfg.host}:{cfg.port}"
    click.echo(f"{where} offers {key.get_name()} {fingerprint(key)}")
    if any(old.asbytes() == key.asbytes() for old in pinned):
        click.echo(f"already pinned in {cfg.known_hosts}: nothing changed")
    else:
        if pinned:
            for old in pinned:
                click.echo(f"{cfg.known_hosts} pins {old.get_name()} {fingerprint(old)}")
            click.echo(
                "THE SERVER'S KEY HAS CHANGED. Either the server was reinstalled or its key "
                "replaced, or someone is between you and the server. Ask the server's "
                "operator for the new fingerprint before you replace the pinned key."
            )
            if not replace:
                fail("not replaced: pass --replace to pin the new key instead of the old", 1)
            question = f"Replace the pinned key in {cfg.known_hosts} with this one?"
        else:
            click.echo("Compare it with the fingerprint the server's operator gives you.")
            question = f"Pin this key in {cfg.known_hosts}?"
        if not yes and not click.confirm(question, default=False):
            fail(
                f"not pinned: nothing changed in {cfg.known_hosts}; xchange goes on refusing "
                f"{endpoint} until its key is pinned (xchange trust {endpoint})",
                1,
            )
        try:
            remote.pin_host_key(key)
        except XchangeError as exc:
            fail(f"xchange: {exc}", EXIT_NOT_DELIVERED)
        click.echo(f"{'replaced' if pinned else 'pinned'} in {cfg.known_hosts}")
        act(
            config,
            "trust",
            reason,
            detail=f"{endpoint} ({where}): {'replaced' if pinned else 'pinned'} "
            f"{key.get_name()} {fingerprint(key)}",
        )
    unset = [line for line in config.missing_secrets if f"endpoints.{endpoint}." in line]
    try:
        if unset:
            raise ConfigError(unset)
        lines = remote.describe()
    except ConfigError as exc:
        click.echo(f"(not logging in to learn more about the server: {exc.problems[0]})")
    except XchangeError as exc:
        click.echo(f"(could not log in to learn more about the server: {exc.reason})")
    else:
        for line in lines:
            click.echo(f"  {line}")
    finally:
        remote.close()
