"""The daemon: each route on its own schedule (APScheduler 3, the only module that uses
it), local drop folders watched for changes, and a clean stop on SIGTERM.

- A route runs on its ``schedule`` (an interval, or a cron line in a time zone), or every
  ``daemon.poll_interval`` seconds. At most one run of a route at a time; missed runs are
  coalesced into one.
- Routes reading a local folder without a cron schedule are also woken by file events, and
  every ``daemon.rescan`` seconds in case events were lost.
- A route that holds files still being written looks again when they could be ready.
- The wall clock is watched against the monotonic one: a step (NTP, a person, a VM
  resumed) is logged as ``clock_stepped`` and every route is looked at at once and
  rescheduled from the new time (the scheduler counts in wall-clock time: a step back of
  an hour would otherwise hold every look for an hour).
- ``stop`` set (first SIGTERM/SIGINT): no new file is taken, files in hand are finished,
  the scheduler waits for its running jobs, connections are closed.
- ``request_reload()`` (SIGHUP, ``xchange reload``): the configuration, layouts, mappings
  and tables are loaded again and checked whole; if they are sound, the looks in hand
  are finished and the daemon goes on with them (each route's next look re-checks the
  quarantined files they would judge differently). If not, it says why and goes on with
  what it has.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from xchange.config import AppConfig, LocalEndpoint, RouteConfig
from xchange.errors import ConfigError, JournalError, JournalUnavailable, XchangeError
from xchange.journal import Journal
from xchange.runner import RouteResult, Runner
from xchange.watcher import FolderWatcher

log = structlog.get_logger(__name__)

#: Seconds between "still finishing these files" events while a stop waits for them.
FINISHING_EVERY = 5.0
#: Seconds the wall clock may drift from the monotonic one between two ticks of the main
#: loop before it counts as a step.
CLOCK_STEP = 2.0
#: The longest wait between tries of a journal that cannot be reached at start.
JOURNAL_RETRY_MAX = 30.0

T = TypeVar("T")


def when_journal_answers(
    start: Callable[[], T],
    stop: threading.Event,
    on_first_failure: Callable[[JournalUnavailable], None],
) -> T | None:
    """``start()`` (open the journal, set the daemon up), tried again while the journal's
    server cannot be reached (restarting, a network cut): a daemon does not exit for a
    transient loss; it says so at every try, alerts once, and goes on once the server
    answers. None if a stop came first."""
    wait, tries = 1.0, 0
    while not stop.is_set():
        try:
            return start()
        except JournalUnavailable as exc:
            tries += 1
            log.error("journal.unavailable", error=exc.reason, tries=tries, next_try_s=wait)
            if tries == 1:
                on_first_failure(exc)
        stop.wait(wait)
        wait = min(wait * 2, JOURNAL_RETRY_MAX)
    return None


def check_schedules(config: AppConfig) -> list[str]:
    """Problems with the routes' cron lines, named by file and key (for ``xchange check``)."""
    problems = []
    for i, route in enumerate(config.routes):
        if route.schedule.cron is None:
            continue
        try:
            CronTrigger.from_crontab(route.schedule.cron, timezone=route.schedule.timezone or UTC)
        except ValueError as exc:
            problems.append(f"{config.source_file}: routes[{i}].schedule.cron: {exc}")
    return problems


class Daemon:
    """Runs every route of a configuration until ``stop`` is set."""

    def __init__(
        self,
        config: AppConfig,
        journal: Journal,
        *,
        stop: threading.Event,
        on_result: Callable[[RouteResult], None] | None = None,
        load: Callable[[], AppConfig] | None = None,
    ) -> None:
        self.journal = journal
        self.stop = stop
        self.on_result = on_result
        #: Loads the configuration again (with its layouts and mappings) on a reload.
        self.load = load
        self._reload = threading.Event()
        #: How many reloads took effect (for whoever watches the daemon).
        self.reloads = 0
        self._setup(config, Runner(config, journal, stop=stop))

    def _setup(self, config: AppConfig, runner: Runner) -> None:
        self.config = config
        self.runner = runner
        self._dirty = {r.name: threading.Event() for r in config.routes}
        # Names from file events since a route's last look; None: list the whole folder.
        self._names: dict[str, set[str] | None] = {r.name: None for r in config.routes}
        self._names_lock = threading.Lock()
        #: Routes whose first run (at start) is done: later runs of a cron route are its
        #: scheduled slots, taken by one daemon of a shared journal.
        self._started: set[str] = set()
        self._began = datetime.now(UTC)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(config.daemon.workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            timezone=UTC,
        )
        self.watcher = FolderWatcher(self._file_event)
        self._watched: set[str] = set()
        #: Routes not watched whose next look is for the files held to settle (and the
        #: retries due), and when each last listed its whole folder: such a look asks the
        #: server for those names only while the last listing is younger than the route's
        #: interval (a folder of 100,000 files over a slow link lists in seconds).
        self._held_look: set[str] = set()
        self._listed_at: dict[str, float] = {}
        self._listing_took: dict[str, float] = {}

    def _trigger(self, route: RouteConfig) -> Any:
        schedule = route.schedule
        if schedule.cron is not None:
            return CronTrigger.from_crontab(schedule.cron, timezone=schedule.timezone or UTC)
        return IntervalTrigger(seconds=schedule.interval or self.config.daemon.poll_interval)

    def run(self) -> None:
        """Block until ``stop`` is set, then shut down cleanly."""
        self._start()
        log.info(
            "daemon.started",
            routes=[r.name for r in self.config.routes],
            watched=sorted(self._watched),
        )
        try:
            wall, mono = time.time(), time.monotonic()
            while not self.stop.wait(0.2):
                if self._reload.is_set():
                    self._reload.clear()
                    self._reload_now()
                now_wall, now_mono = time.time(), time.monotonic()
                step = (now_wall - wall) - (now_mono - mono)
                wall, mono = now_wall, now_mono
                if abs(step) > CLOCK_STEP:
                    self._clock_stepped(step)
        finally:
            log.info("daemon.stopping", reason="signal", in_hand=self.runner.in_hand() or None)
            done = threading.Event()
            threading.Thread(target=self._say_finishing, args=(done,), daemon=True).start()
            try:
                self._shutdown()
            finally:
                done.set()
            log.info("daemon.stopped")

    def _clock_stepped(self, step: float) -> None:
        """The wall clock stepped by ``step`` seconds: every job is due now, and counts its
        next runs from the new time (cron lines from the new time of day)."""
        log.warning(
            "clock_stepped",
            step_s=round(step, 1),
            reason="the wall clock moved; every route is looked at now and rescheduled "
            "from the new time",
        )
        now = datetime.now(UTC)
        for job in self.scheduler.get_jobs():
            if isinstance(job.trigger, CronTrigger):
                job.reschedule(job.trigger)
            else:
                job.modify(next_run_time=now)

    def _say_finishing(self, done: threading.Event) -> None:
        """While a stop waits for the files in hand, say which every 5 s (no silence)."""
        while not done.wait(FINISHING_EVERY):
            files = self.runner.in_hand()
            if files:
                log.info("daemon.finishing", files=len(files), in_hand=files)

    def request_reload(self) -> None:
        """Load the configuration again soon (safe from a signal handler: it only sets a
        flag the main loop reads)."""
        self._reload.set()

    def _start(self) -> None:
        now = datetime.now(UTC)
        for route in self.config.routes:
            self.scheduler.add_job(
                self._job,
                self._trigger(route),
                args=[route.name],
                id=route.name,
                name=f"route {route.name}",
                next_run_time=now,  # files present at start
            )
        if any(r.expect is not None for r in self.config.routes):
            self.scheduler.add_job(
                self._deadlines,
                IntervalTrigger(seconds=60),
                id="deadlines",
                name="arrival deadlines",
                next_run_time=now,
            )
        if any(r.target.collected for r in self.config.routes):
            self.scheduler.add_job(
                self._pickups,
                IntervalTrigger(seconds=self.config.daemon.pickup_every),
                id="pickups",
                name="pickups by partners",
                next_run_time=now,
            )
        watched = self._watch()
        # Routes whose looks between rescans are the files events named (and the held
        # and due ones), not a listing of the whole folder.
        self._watched = set(watched)
        if watched:
            self.scheduler.add_job(
                self.kick,
                IntervalTrigger(seconds=self.config.daemon.rescan),
                args=[watched],
                id="rescan",
                name="rescan of watched folders",
            )
        if not self.watcher.start():
            self._watched.clear()
        self.scheduler.start()

    def _shutdown(self) -> None:
        self.watcher.stop()
        self.scheduler.shutdown(wait=True)  # the files in hand are finished
        self.runner.close()

    def _reload_now(self) -> None:
        """The configuration loaded and checked again; taken only if it is whole."""
        if self.load is None:
            log.warning("daemon.reload_unavailable", reason="no configuration file to load")
            return
        try:
            config = self.load()
            if problems := check_schedules(config):
                raise ConfigError(problems)
            journal_changed = config.journal != self.config.journal
            if journal_changed:
                # The journal open now stays (and the scratch space beside it).
                config = config.model_copy(update={"journal": self.config.journal})
            runner = Runner(config, self.journal, stop=self.stop)
        except ConfigError as exc:
            log.error(
                "daemon.reload_refused",
                problems=exc.problems,
                kept="the configuration loaded before goes on",
            )
            return
        except XchangeError as exc:
            log.error(
                "daemon.reload_refused",
                problems=[exc.reason],
                kept="the configuration loaded before goes on",
            )
            return
        if journal_changed:
            log.warning(
                "daemon.reload_journal_kept",
                reason="the journal settings changed; they take effect at the next start",
            )
        before = {r.name for r in self.config.routes}
        after = {r.name for r in config.routes}
        self._shutdown()
        self._setup(config, runner)
        self._start()
        self.reloads += 1
        log.info(
            "daemon.reloaded",
            routes=sorted(after),
            added=sorted(after - before) or None,
            removed=sorted(before - after) or None,
        )

    def _watch(self) -> list[str]:
        folders: dict[Any, list[RouteConfig]] = {}
        for route in self.config.routes:
            endpoint = self.config.endpoints[route.source.endpoint]
            if isinstance(endpoint, LocalEndpoint) and route.schedule.cron is None:
                folders.setdefault(endpoint.path, []).append(route)
        for folder, routes in folders.items():
            self.watcher.watch(
                folder, [r.name for r in routes], recursive=any(r.source.recursive for r in routes)
            )
        return [r.name for routes in folders.values() for r in routes]

    def _file_event(self, routes: list[str], name: str | None) -> None:
        """A watched folder changed: look at that file soon (or at everything)."""
        with self._names_lock:
            for route in routes:
                pending = self._names[route]
                if name is not None and pending is not None:
                    pending.add(name)
                elif name is None:
                    self._names[route] = None
        self._kick(routes, 0.02)

    def kick(self, routes: list[str], delay: float = 0.02) -> None:
        """Run these routes soon (again, if one is running now), listing their folders."""
        with self._names_lock:
            for route in routes:
                self._names[route] = None
        self._kick(routes, delay)

    def _kick(self, routes: list[str], delay: float) -> None:
        if self.stop.is_set():
            return
        when = datetime.now(UTC) + timedelta(seconds=delay)
        for name in routes:
            self._dirty[name].set()
            job = self.scheduler.get_job(name)
            if job is not None and (job.next_run_time is None or job.next_run_time > when):
                job.modify(next_run_time=when)

    def _held_only(self, route: RouteConfig) -> bool:
        """Whether this look of a route not watched may look at its held files only: it
        was asked for them, the route has no cron schedule, and its folder was listed
        within half its interval, or within twice what its last listing took (new files
        wait no longer than they did: the scheduled look lists, and a listing that takes
        longer than the interval is followed by the next at once)."""
        with self._names_lock:
            asked = route.name in self._held_look
            self._held_look.discard(route.name)
        if not asked or route.schedule.cron is not None or route.source.manifest is not None:
            return False
        interval = route.schedule.interval or self.config.daemon.poll_interval
        listed = self._listed_at.get(route.name)
        # (a look that lists for longer than the interval lists again right after)
        recent = max(interval / 2, 2 * self._listing_took.get(route.name, 0.0))
        return listed is not None and time.monotonic() - listed < recent

    def _deadlines(self) -> None:
        from xchange import deadlines

        try:
            deadlines.check(
                self.config,
                self.runner.journal,
                self.runner.alerter,
                datetime.now(UTC),
                started=self._began,
            )
        except XchangeError as exc:
            log.error("deadlines.check_failed", error=exc.reason)

    def _pickups(self) -> None:
        self.runner.look_for_pickups()

    def _job(self, name: str) -> None:
        route = self.config.route(name)
        if route.schedule.cron is not None and name in self._started:
            # One daemon of a group sharing the journal runs each scheduled slot.
            slot = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")
            try:
                taken = self.runner.journal.slots.take(name, slot)
            except JournalError as exc:
                log.error("route.slot_failed", route=name, error=exc.reason)
                return
            if not taken:
                log.info("route.slot_taken_elsewhere", route=name, slot=slot)
                return
        self._started.add(name)
        while not self.stop.is_set():
            self._dirty[name].clear()
            with self._names_lock:
                only, self._names[name] = self._names[name], set()
            if name not in self._watched:
                # No file events: list the folder, but for a look at the files held to
                # settle soon after a listing (their names only).
                only = set() if self._held_only(route) else None
                if only is None:
                    self._listed_at[name] = time.monotonic()
            result = self.runner.run_route_pinned(route, only=only)
            if name not in self._watched and result.listed_in is not None:
                # (the listing alone: not the deliveries the look went on to make)
                self._listing_took[name] = result.listed_in
            try:
                self.runner.journal.checkpoint()  # every CHECKPOINT_EVERY seconds at most
            except JournalError as exc:
                log.error("journal.checkpoint_failed", error=exc.reason)
            if self.on_result is not None:
                self.on_result(result)
            if result.next_look is not None:
                with self._names_lock:
                    self._held_look.add(name)
                self._kick([name], result.next_look + 0.05)
            if not self._dirty[name].is_set() or result.next_look is not None:
                break
