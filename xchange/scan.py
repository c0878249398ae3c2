"""A look at a route's drop folder: which files are ready, which are held (still being
written, waiting for a marker), which the journal has never seen, and which are delivered
already but still there (an archive cut short, or left in place on purpose).

A drop folder belongs to one journal: the look marks it (a heartbeat every
``DROP_HEARTBEAT`` seconds) and refuses a folder another journal's daemon takes from.
"""

from __future__ import annotations

import io
import os
import posixpath
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from xchange.alerts import Alerter
from xchange.config import RouteConfig
from xchange.errors import RemoteError, RemoteNotFound, UnsafeName, XchangeError
from xchange.journal import DONE_STATES, FileRecord, Journal, Observation, State
from xchange.manifest import Entry, Listings, ManifestRefused, parse
from xchange.readiness import Verdict, hold, judge, marker_name, marker_pattern
from xchange.remote import DropOwner, FileInfo, Remote
from xchange.remote.base import SHARED, Selector, is_temporary, safe_subfolder
from xchange.sessions import Sessions

log = structlog.get_logger(__name__)

#: The biggest partner's manifest read (64 MiB lists hundreds of thousands of files).
MANIFEST_MAX = 64 << 20

#: A drop folder's mark is renewed at a look at most this often, and another journal's
#: mark older than DROP_TTL seconds is taken over (its daemon is gone).
DROP_HEARTBEAT = 60.0
DROP_TTL = 600.0

#: Files of a listing looked up in the journal at once.
LOOKUP_CHUNK = 5000

#: A listed file whose manifest gives no sha256 counts as taken by a record first claimed
#: after the manifest was written, less this many seconds (the partner's clock and ours).
MANIFEST_CLOCK_SLACK = 600.0

#: The states in which a listed file is done with, for its manifest: delivered, or
#: quarantined (judged; a corrected file comes with a manifest of its own).
JUDGED = DONE_STATES | {State.QUARANTINED, State.DROPPED}


@dataclass(slots=True)
class Look:
    """What one look at a route's source found (``verdict`` None: it could not look)."""

    verdict: Verdict | None = None
    #: Names the journal has never seen (new files: candidates for batches).
    unknown: set[str] = field(default_factory=set)
    #: Delivered files still in the drop folder, with their records.
    delivered: list[tuple[FileInfo, FileRecord]] = field(default_factory=list)
    #: Quarantined files (their bytes kept) still in the drop folder: being taken out by
    #: the daemon that quarantined them, or their removal failed. Never taken again.
    quarantined: list[tuple[FileInfo, FileRecord]] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None
    #: The partners' manifests read at this look, with the files each lists.
    manifests: list[tuple[FileInfo, list[Entry]]] = field(default_factory=list)
    #: Every name the look kept from the folder: the route's files and their markers
    #: (every name on a route with partner manifests).
    names: set[str] = field(default_factory=set)
    #: Seconds the folder's listing took (None: the look asked for names only).
    listed_in: float | None = None


class Scanner:
    """Looks at drop folders for one journal."""

    def __init__(
        self,
        journal: Journal,
        sessions: Sessions,
        alerter: Alerter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        listings: Listings | None = None,
    ) -> None:
        self.now = now
        self.journal = journal
        self.sessions = sessions
        self.alerter = alerter
        #: What the partners' manifests list (shared with the workers that check files).
        self.listings = listings or Listings()
        #: (route, manifest, listed name) found done with in the journal.
        self._judged: set[tuple[str, str, str]] = set()
        #: Per route, files seen delivered and left in place (after = "leave"), so that a
        #: look at a folder with a long history costs one set look-up per old file.
        self._left_in_place: dict[str, set[tuple[str, int, int]]] = {}
        #: Source endpoints marked as this journal's drop: the remote holding the mark,
        #: and the time of its last heartbeat.
        self._drops: dict[str, tuple[Remote, float]] = {}
        #: Routes whose shared drop folder was said (once while it lasts).
        self._shared_said: set[str] = set()
        self._drops_lock = threading.Lock()

    def _due_retries(self, route: RouteConfig) -> set[str]:
        """Names of the route's files waiting for a retry that is due: a look at the names
        of file events takes them too (no event will name them)."""
        now = self.now()
        return {
            r.path
            for r in self.journal.query(route=route.name, state=State.RETRYING, limit=100_000)
            if r.endpoint == route.source.endpoint
            and (r.next_retry_at is None or r.next_retry_at <= now)
        }

    def _keep(self, route: RouteConfig) -> Callable[[str, int, int], bool] | None:
        """Which files of a listing the look needs, decided as the listing comes (before
        any object or journal look-up is made for a file): the route's files (but those
        seen delivered and left in place), and the done-markers they may have. A route
        with partner manifests needs every name (a manifest may list any)."""
        if route.source.manifest is not None:
            return None
        selector = Selector(tuple(route.source.patterns), tuple(route.source.exclude))
        if route.ready.marker:
            marker = marker_pattern(route.ready.marker)

            def keep_with_markers(name: str, size: int, mtime_ns: int) -> bool:
                # Files left in place stay: their markers are no input either.
                base = posixpath.basename(name)
                return selector.wants(name) or marker.fullmatch(base) is not None

            return keep_with_markers
        left = self._left_in_place.setdefault(route.name, set())

        def keep(name: str, size: int, mtime_ns: int) -> bool:
            return (name, size, mtime_ns) not in left and selector.wants(name)

        return keep

    def _records(
        self, route: RouteConfig, files: list[FileInfo]
    ) -> Iterator[tuple[FileInfo, FileRecord | State | None]]:
        """Each file with the journal's record of it (None: never seen; only the state of
        one done with on a route that leaves its files in place), looked up
        ``LOOKUP_CHUNK`` files at a time (a first look at a long history holds the records
        of one chunk, not of the whole folder)."""
        leave = route.after.action == "leave"
        endpoint = route.source.endpoint
        for start in range(0, len(files), LOOKUP_CHUNK):
            chunk = files[start : start + LOOKUP_CHUNK]
            keys = [(f.name, f.size, f.mtime_ns) for f in chunk]
            if leave:
                # A history left in place: its files' states set the delivered ones
                # aside (see ``look``) without making a record of each.
                states = self.journal.states_many(route.name, endpoint, keys)
                keys = [k for k in keys if k in states and states[k] not in DONE_STATES]
                records = self.journal.lookup_many(route.name, endpoint, keys) if keys else {}
                for f in chunk:
                    key = (f.name, f.size, f.mtime_ns)
                    state = states.get(key)
                    if state is not None and state in DONE_STATES:
                        yield f, state
                    else:
                        yield f, records.get(key)
                continue
            records = self.journal.lookup_many(route.name, endpoint, keys)
            for f in chunk:
                yield f, records.get((f.name, f.size, f.mtime_ns))

    def look(self, route: RouteConfig, only: set[str] | None = None) -> Look:
        """List the source (or look at ``only`` these names and the held ones)."""
        source = self.sessions.remote(route.source.endpoint)
        try:
            other = self._claim_drop(route.source.endpoint, source)
        except RemoteError as exc:
            log.error("route.source_failed", error=exc.reason, cause=exc.kind)
            return Look(error=exc.reason, error_kind=exc.kind)
        if other is not None:
            # Said once while it lasts (the route's error says it at every look).
            said = route.name in self._shared_said
            self._shared_said.add(route.name)
            (log.debug if said else log.error)(
                "route.drop_shared", endpoint=route.source.endpoint, other=other.describe()
            )
            return Look(
                error=(
                    f"{route.source.endpoint}: another xchange takes files from this folder "
                    f"({other.describe()}); two journals on one drop folder lose and "
                    "duplicate files: give every daemon one journal (see README), or stop "
                    "the other one"
                ),
                error_kind="drop-shared",
            )
        self._shared_said.discard(route.name)
        archive_top = route.after.folder.split("/", 1)[0] if route.after.action == "archive" else ""
        observed = self.journal.observations.held(route.name)
        listed_in: float | None = None
        try:
            if only is None or route.source.manifest is not None:
                began = time.monotonic()
                listing = source.list(
                    recursive=route.source.recursive,
                    skip_dirs=tuple(d for d in (archive_top,) if d and "{" not in d),
                    keep=self._keep(route),
                )
                listed_in = time.monotonic() - began
                log.debug("route.listed", entries=len(listing))
            else:
                due = self._due_retries(route)
                listing = stat_names(route, source, only | set(observed) | due, archive_top)
        except RemoteError as exc:
            log.error("route.source_failed", error=str(exc), cause=exc.kind)
            return Look(error=str(exc), error_kind=exc.kind)
        names = {f.name for f in listing}
        selector = Selector(tuple(route.source.patterns), tuple(route.source.exclude))
        # Files seen delivered and left in place on purpose need neither matching nor a
        # journal look-up (a folder's history costs one set look-up per file).
        left = self._left_in_place.setdefault(route.name, set())
        if route.ready.marker:
            # Done-markers of every wanted file (left in place or not) are no input.
            wanted = [f for f in listing if selector.wants(f.name)]
            markers = {marker_name(route.ready.marker, f.name) for f in wanted}
            wanted = [
                f
                for f in wanted
                if f.name not in markers and (f.name, f.size, f.mtime_ns) not in left
            ]
        else:
            wanted = [
                f
                for f in listing
                if (f.name, f.size, f.mtime_ns) not in left and selector.wants(f.name)
            ]
        partner = route.source.manifest
        manifests: list[FileInfo] = []
        if partner is not None:
            # A partner's manifests are no data files, even when the route's pattern matches.
            mine = Selector(tuple(partner.patterns))
            manifests = [f for f in listing if mine.wants(f.name)]
            taken = {f.name for f in manifests}
            wanted = [f for f in wanted if f.name not in taken]
        look = Look(names=names, listed_in=listed_in)
        fresh = []
        for f, known in self._records(route, wanted):
            if isinstance(known, State):  # done with, and left in place
                left.add((f.name, f.size, f.mtime_ns))
            elif known is None:
                fresh.append(f)
                look.unknown.add(f.name)
            elif known.state == State.QUARANTINED and known.quarantine_path:
                look.quarantined.append((f, known))
            elif known.state not in DONE_STATES:
                fresh.append(f)
            elif route.after.action == "leave":
                left.add((f.name, f.size, f.mtime_ns))
            else:
                look.delivered.append((f, known))
        now = self.now().astimezone(UTC)
        listed: set[str] | None = None
        extra: Verdict | None = None
        if partner is not None:
            extra = self._read_manifests(route, source, manifests, names, observed, now, look)
            listed = set(self.listings.listed(route.name))
        look.verdict = verdict = judge(route.ready, fresh, names, observed, now, listed)
        if extra is not None:
            look.verdict = verdict = Verdict(
                verdict.ready,
                verdict.held + extra.held,
                verdict.stuck + extra.stuck,
                verdict.future,
            )
        if only is None or verdict.held or observed:
            self.journal.observations.save(route.name, verdict.held)
        for info in verdict.future:
            ahead = info.mtime_ns / 1e9 - now.timestamp()
            log.warning(
                "file.clock_skew",
                source=info.name,
                ahead_s=round(ahead),
                reason="the file's time is in the future (the writer's clock is ahead); "
                "judged by its size and time staying the same between looks",
            )
        for obs in verdict.stuck:
            log.warning("file.stuck", source=obs.path, reason=obs.reason)
            self.alerter.failure(route.name, "stuck", True, [obs.path], obs.reason)
        return look

    # ------------------------------------------------------------------ manifests

    def _read_manifests(
        self,
        route: RouteConfig,
        source: Remote,
        manifests: list[FileInfo],
        names: set[str],
        observed: dict[str, Observation],
        now: datetime,
        look: Look,
    ) -> Verdict:
        """Read the partner's manifests that are completely written (each once while it
        stays the same) and publish what they list; a manifest still being written, one
        refused, or one listing files that are not here and were never taken is held,
        with its reason (and reported as stuck after ``ready.max_wait``)."""
        spec = route.ready.model_copy(update={"marker": None})
        settled = judge(spec, manifests, names, observed, now)
        held, stuck = list(settled.held), list(settled.stuck)
        read: list[tuple[int, list[Entry]]] = []
        for info in settled.ready:
            before = observed.get(info.name)
            try:
                entries = self._manifest(route, source, info)
            except RemoteNotFound:
                continue  # gone since the listing: taken back, or archived by another look
            except RemoteError as exc:
                reason = f"manifest could not be read: {exc.reason}"
                log.warning("manifest.unread", manifest=info.name, error=exc.reason)
                obs, newly = hold(route.ready, info, reason, *_seen(before, now), before, now)
                held.append(obs)
                if newly:  # held longer than ready.max_wait: alerted once, as stuck
                    stuck.append(obs)
                continue
            except ManifestRefused as exc:
                reason = f"manifest refused: {exc.reason}"
                if before is None or reason not in before.reason:
                    log.error("manifest.refused", manifest=info.name, error=exc.reason)
                    self.alerter.failure(route.name, exc.kind, False, [info.name], exc.reason)
                reason_held = hold(route.ready, info, reason, *_seen(before, now), before, now)
                held.append(reason_held[0])
                if reason_held[1]:
                    stuck.append(reason_held[0])
                continue
            look.manifests.append((info, entries))
            read.append((info.mtime_ns, entries))
            since = _written(info) - timedelta(seconds=MANIFEST_CLOCK_SLACK)
            missing = [
                e.name for e in entries if e.name not in names and not self._taken(route, e, since)
            ]
            if missing:
                shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
                reason = f"manifest: waiting for {len(missing)} listed file(s) not here: {shown}"
                obs, newly = hold(route.ready, info, reason, *_seen(before, now), before, now)
                held.append(obs)
                if newly:
                    stuck.append(obs)
        self.listings.publish(route.name, {m.name for m in manifests}, read)
        return Verdict([], held, stuck)

    def _manifest(self, route: RouteConfig, source: Remote, info: FileInfo) -> list[Entry]:
        partner = route.source.manifest
        assert partner is not None
        known = self.listings.known(route.name, info.name, info.size, info.mtime_ns)
        if known is not None:
            return known
        entries: list[Entry] | ManifestRefused
        if info.size > MANIFEST_MAX:
            # (a manifest lists files: a bigger one is not one, and is not read into memory)
            entries = ManifestRefused(
                f"{info.name}: {info.size} bytes, more than a manifest may be "
                f"({MANIFEST_MAX >> 20} MiB)"
            )
        else:
            buffer = io.BytesIO()
            source.download(info.name, buffer)
            try:
                entries = parse(partner, buffer.getvalue(), info.name)
            except ManifestRefused as exc:
                entries = exc
        self.listings.remember(route.name, info.name, info.size, info.mtime_ns, entries)
        if isinstance(entries, ManifestRefused):
            raise entries
        log.info("manifest.read", manifest=info.name, files=len(entries))
        return entries

    def _taken(self, route: RouteConfig, entry: Entry, since: datetime) -> bool:
        """Whether the journal has a listed file done with on the route: its content (by
        the manifest's sha256), or, without one, a file of its name first claimed since
        the manifest was written."""
        key = (route.name, entry.manifest, entry.name)
        if key in self._judged:
            return True
        if entry.sha256 is not None:
            # The content the manifest names, looked up by its checksum (exact, indexed).
            found = self.journal.find_content(route.name, entry.sha256)
            candidates = [found] if found is not None else []
        else:
            # The newest file of that name is the one that can be younger than the
            # manifest (only * and ? are wildcards: they match themselves here too).
            pattern = "".join("?" if ch in "*?" else ch for ch in entry.name)
            candidates = [
                r
                for r in self.journal.query(route=route.name, pattern=pattern, limit=50)
                if r.path == entry.name
            ][:1]
        for record in candidates:
            # (by checksum, the content is what counts: the same bytes taken before under
            # another name make this file a duplicate, done with as well)
            named = entry.sha256 is not None or record.path == entry.name
            if not named or record.endpoint != route.source.endpoint:
                continue
            if record.state not in JUDGED:
                continue
            if entry.sha256 is None and record.created_at < since:
                continue
            self._judged.add(key)
            return True
        return False

    def finish_manifests(self, route: RouteConfig, look: Look, done: set[str]) -> None:
        """Archive (or delete, as the route's ``after`` says) each partner's manifest of
        the look whose files are all done with: taken at this look (``done``), or gone
        from the folder with their records delivered or quarantined. ``after = "leave"``
        leaves manifests too."""
        action = route.after.action
        if action == "leave" or not look.manifests:
            return
        source = self.sessions.remote(route.source.endpoint)
        for info, entries in look.manifests:
            since = _written(info) - timedelta(seconds=MANIFEST_CLOCK_SLACK)
            if not all(
                e.name in done or (e.name not in look.names and self._taken(route, e, since))
                for e in entries
            ):
                continue
            try:
                if action == "delete":
                    source.remove(info.name, expect=info)
                    moved = None
                else:
                    folder = safe_subfolder(route.after.folder.format(date=self.now()))
                    moved = source.move(info.name, folder, expect=info)
            except (RemoteError, UnsafeName) as exc:
                log.warning("manifest.after_failed", manifest=info.name, error=exc.reason)
                continue
            self._judged = {k for k in self._judged if k[:2] != (route.name, info.name)}
            log.info(
                "manifest.done",
                manifest=info.name,
                files=len(entries),
                action=action,
                archived=moved,
                reason="every file it lists is done with",
            )

    # ------------------------------------------------------------------ drops

    def owner(self) -> DropOwner:
        """This process as the owner of the drop folders it takes from."""
        journal_id = self.journal.journal_id + (SHARED if self.journal.shared else "")
        return DropOwner(journal_id, socket.gethostname(), os.getpid(), time.time())

    def _claim_drop(self, endpoint: str, source: Remote) -> DropOwner | None:
        """Mark a source folder as this journal's (a heartbeat every ``DROP_HEARTBEAT``
        seconds); the other journal's owner if it is marked by one."""
        with self._drops_lock:
            held = self._drops.get(endpoint)
            now = time.monotonic()
            if held is not None and now - held[1] < DROP_HEARTBEAT:
                return None
            remote = held[0] if held is not None else source
            other = remote.claim_drop(self.owner(), DROP_TTL)
            if other is None:
                self._drops[endpoint] = (remote, now)
            return other

    def release_drops(self) -> None:
        """Take this journal's marks off the drop folders (at a clean stop)."""
        with self._drops_lock:
            for remote, _ in self._drops.values():
                try:
                    remote.release_drop(self.owner())
                except XchangeError as exc:
                    log.warning("drop.release_failed", endpoint=remote.label, error=exc.reason)
            self._drops.clear()


def _seen(before: Observation | None, now: datetime) -> tuple[datetime, datetime]:
    """(first seen, last changed) of a file held again, or held for the first time."""
    if before is None:
        return now, now
    return before.first_seen, before.changed_at


def _written(info: FileInfo) -> datetime:
    return datetime.fromtimestamp(info.mtime_ns / 1e9, tz=UTC)


def stat_names(
    route: RouteConfig, source: Remote, names: set[str], archive_top: str
) -> list[FileInfo]:
    """The given names that are regular files in the source folder (with their
    done-markers), as a listing would show them."""
    wanted: list[FileInfo] = []
    for name in sorted(names):
        if is_temporary(posixpath.basename(name)) or (
            archive_top and name.split("/", 1)[0] == archive_top
        ):
            continue
        if "/" in name and not route.source.recursive:
            continue
        info = source.stat(name)
        if info is None:
            continue
        wanted.append(info)
        if route.ready.marker:
            marker = source.stat(marker_name(route.ready.marker, name))
            if marker is not None:
                wanted.append(marker)
    return sorted(wanted, key=lambda f: (f.mtime_ns, f.name))


__all__ = ["DROP_HEARTBEAT", "DROP_TTL", "Look", "Scanner", "stat_names"]
