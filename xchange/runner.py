"""Running routes: list the source, convert each file, deliver atomically, journal every step.

Order of events for one file (each journal write is committed before the side
effect it announces, so a restart resumes from the last committed state):

1. skip it cheaply if this name, size and time were already delivered on the route;
2. read it, hash it, *claim* it in the journal; identical content already delivered
   on the route is a duplicate and is not sent again;
3. convert it (pure); a format, validation or mapping error quarantines it;
4. journal ``delivering``, then put each output under a hidden temporary name and
   rename it into place; an output already present with the same bytes (a crash
   after the rename) is recognised, not sent twice;
5. journal ``delivered``, then archive, delete or leave the source.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from xchange.config import AppConfig, RouteConfig
from xchange.errors import (
    FormatError,
    RemoteError,
    TargetExists,
    UnsafeName,
    XchangeError,
)
from xchange.journal import FileKey, FileRecord, Journal, OutputRecord, State
from xchange.pipeline import Pipeline
from xchange.quarantine import Quarantine
from xchange.remote import FileInfo, Remote, open_remote
from xchange.remote.base import NullWriter, safe_subfolder, temp_name_for
from xchange.retry import call_with_retry
from xchange.sink import Output, Sink, staging_folder

log = structlog.get_logger(__name__)

#: Outcomes of one source file.
DELIVERED, DUPLICATE, QUARANTINED, RETRY_LATER, SKIPPED = (
    "delivered",
    "duplicate",
    "quarantined",
    "retry-later",
    "skipped",
)


@dataclass(slots=True)
class FileResult:
    route: str
    source: str
    outcome: str
    file_id: int | None = None
    outputs: list[str] = field(default_factory=list)
    bytes: int = 0
    documents: int = 0
    encoding: str | None = None
    duration_ms: int = 0
    error: str | None = None


@dataclass(slots=True)
class RouteResult:
    route: str
    files: list[FileResult] = field(default_factory=list)
    #: Set when the route could not run at all (e.g. its source is unreachable).
    error: str | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for f in self.files if f.outcome == outcome)

    @property
    def ok(self) -> bool:
        return self.error is None and not any(
            f.outcome in (QUARANTINED, RETRY_LATER) for f in self.files
        )

    def summary(self) -> str:
        counts = Counter(f.outcome for f in self.files)
        docs = sum(f.documents for f in self.files if f.outcome == DELIVERED)
        parts = [f"{counts[DELIVERED]} delivered ({docs} documents)"]
        parts += [f"{counts[o]} {o}" for o in (DUPLICATE, QUARANTINED, RETRY_LATER) if counts[o]]
        text = f"{self.route}: " + ", ".join(parts)
        if self.error:
            text += f"; could not run: {self.error}"
        for f in self.files:
            if f.outcome in (QUARANTINED, RETRY_LATER):
                text += f"\n  {f.outcome}: {f.source} (#{f.file_id}): {f.error}"
        return text


#: Exit codes of ``xchange run --once`` (documented in README.md).
EXIT_OK, EXIT_QUARANTINED, EXIT_CONFIG, EXIT_NOT_DELIVERED, EXIT_LOCKED = 0, 1, 2, 3, 4


def exit_code(results: list[RouteResult]) -> int:
    """0 all delivered; 3 something could not be delivered yet; else 1 if any quarantined."""
    if any(r.error or r.count(RETRY_LATER) for r in results):
        return EXIT_NOT_DELIVERED
    if any(r.count(QUARANTINED) for r in results):
        return EXIT_QUARANTINED
    return EXIT_OK


class Runner:
    """Runs the routes of one configuration against one journal."""

    def __init__(
        self,
        config: AppConfig,
        journal: Journal,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC).astimezone(),
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        #: Set to stop taking new files; the file in hand is finished first.
        self.stop = stop or threading.Event()
        self.journal = journal
        self.now = now
        self.sleep = sleep
        self.pipelines = {r.name: Pipeline(r, config.formats) for r in config.routes}
        self.quarantine = Quarantine(config.quarantine.path)
        #: Private scratch space: downloads and each file's staged outputs.
        self.scratch = config.journal.path.parent / "scratch"
        self._remotes: dict[str, Remote] = {}

    def remote(self, name: str) -> Remote:
        if name not in self._remotes:
            self._remotes[name] = open_remote(name, self.config.endpoints[name])
        return self._remotes[name]

    def close(self) -> None:
        for remote in self._remotes.values():
            remote.close()
        self._remotes.clear()

    # ------------------------------------------------------------------ routes

    def run_once(self, routes: list[str] | None = None) -> list[RouteResult]:
        """Process every ready file of each route once."""
        chosen = [r for r in self.config.routes if routes is None or r.name in routes]
        return [self.run_route(route) for route in chosen if not self.stop.is_set()]

    def run_route(self, route: RouteConfig) -> RouteResult:
        result = RouteResult(route.name)
        with structlog.contextvars.bound_contextvars(route=route.name):
            try:
                files = self.remote(route.source.endpoint).list(route.source.pattern)
            except RemoteError as exc:
                result.error = str(exc)
                log.error("route.source_failed", error=str(exc), cause=exc.kind)
                return result
            for info in files:
                if self.stop.is_set():
                    break
                outcome = self.process(route, info)
                result.files.append(outcome)
                if outcome.outcome == RETRY_LATER and outcome.error and result.error is None:
                    # The target is in trouble: leave the remaining files for the next run
                    # instead of failing each of them the same way.
                    result.error = outcome.error
                    break
            log.info(
                "route.summary",
                delivered=result.count(DELIVERED),
                duplicates=result.count(DUPLICATE),
                quarantined=result.count(QUARANTINED),
                retry_later=result.count(RETRY_LATER),
                error=result.error,
            )
        return result

    # ------------------------------------------------------------------ one file

    def process(self, route: RouteConfig, info: FileInfo) -> FileResult:
        started = time.monotonic()
        result = FileResult(route.name, info.name, SKIPPED, bytes=info.size)
        with structlog.contextvars.bound_contextvars(source=info.name):
            try:
                self._process(route, info, result)
            except XchangeError as exc:
                # Anything not handled below (the source vanished, the journal failed):
                # the file stays where it is and is tried again next run.
                result.outcome, result.error = RETRY_LATER, str(exc)
            result.duration_ms = int((time.monotonic() - started) * 1000)
            if result.outcome != SKIPPED:
                log.info(
                    f"file.{result.outcome.replace('-', '_')}",
                    target=route.target.endpoint,
                    outputs=result.outputs,
                    bytes=result.bytes,
                    documents=result.documents,
                    encoding=result.encoding,
                    duration_ms=result.duration_ms,
                    outcome=result.outcome,
                    file_id=result.file_id,
                    error=result.error,
                )
        return result

    def _process(self, route: RouteConfig, info: FileInfo, result: FileResult) -> None:
        source = self.remote(route.source.endpoint)
        if self.journal.seen(
            route.name, route.source.endpoint, info.name, info.size, info.mtime_ns
        ):
            if route.after.action != "leave":
                self._after(route, source, info.name, None)
            return
        with source.local_copy(info.name, self.scratch / "downloads") as path:
            self._process_local(route, source, info, path, result)

    def _process_local(
        self, route: RouteConfig, source: Remote, info: FileInfo, path: Path, result: FileResult
    ) -> None:
        size, sha = _fingerprint(path)
        result.bytes = size
        pipeline = self.pipelines[route.name]
        key = FileKey(route.name, route.source.endpoint, info.name, size, info.mtime_ns, sha)
        claim = self.journal.claim(
            key, layout_version=pipeline.versions[0], mapping_version=pipeline.versions[1]
        )
        record = claim.record
        result.file_id = record.id
        if claim.already_delivered:
            result.outcome = DUPLICATE
            result.outputs = [o.path for o in record.outputs]
            self.journal.transition(
                record.id,
                record.state,
                note=f"same content seen again as {info.name}; not sent again",
            )
            self._after(route, source, info.name, None)
            return
        with staging_folder(self.scratch / "staging", f"{route.name}-{record.id}") as staging:
            try:
                with open(path, "rb") as stream:
                    conversion = pipeline.convert_stream(
                        stream, info.name, self.now(), Sink(staging)
                    )
            except (FormatError, UnsafeName) as exc:
                self._quarantine(route, record, info.name, path, exc, result)
                return
            outputs = conversion.outputs
            result.encoding = conversion.encoding
            self.journal.transition(
                record.id,
                State.DELIVERING,
                note=", ".join(o.name for o in outputs) or "no documents",
                encoding=conversion.encoding,
            )
            try:
                self._deliver(route, record, outputs)
            except TargetExists as exc:
                self._quarantine(route, record, info.name, path, exc, result)
                return
            except RemoteError as exc:
                self.journal.transition(record.id, State.RETRYING, error=(exc.kind, str(exc)))
                result.outcome, result.error = RETRY_LATER, str(exc)
                return
        self.journal.transition(record.id, State.DELIVERED)
        result.outcome = DELIVERED
        result.outputs = [o.name for o in outputs]
        result.documents = sum(o.documents for o in outputs)
        self._after(route, source, info.name, record.id)

    def _deliver(self, route: RouteConfig, record: FileRecord, outputs: list[Output]) -> None:
        target = self.remote(route.target.endpoint)
        done = {o.path for o in record.outputs}
        for out in outputs:
            if out.name in done:
                continue  # delivered before a crash; the journal already has it
            if self._already_there(target, out):
                log.info(
                    "file.output_found",
                    output=out.name,
                    reason="present with the same bytes; not sent again",
                )
            else:
                temp = temp_name_for(out.name, f"{record.sha256[:8]}{out.sha256[:8]}")
                call_with_retry(
                    lambda out=out, temp=temp: self._put(target, route, out, temp),
                    route.retry,
                    sleep=self.sleep,
                )
            self.journal.record_output(
                record.id,
                OutputRecord(
                    route.target.endpoint, out.name, out.size, out.sha256, datetime.now(UTC)
                ),
            )

    @staticmethod
    def _put(target: Remote, route: RouteConfig, out: Output, temp: str) -> None:
        with out.open() as src:
            target.put_atomic(
                out.name,
                src,
                out.size,
                temp_name=temp,
                overwrite=route.target.if_exists == "overwrite",
            )

    @staticmethod
    def _already_there(target: Remote, out: Output) -> bool:
        """True if the target already holds exactly these bytes under this name."""
        info = target.stat(out.name)
        if info is None or info.size != out.size:
            return False
        probe = NullWriter()
        target.download(out.name, probe)  # type: ignore[arg-type]
        return probe.sha.hexdigest() == out.sha256

    def _after(self, route: RouteConfig, source: Remote, name: str, file_id: int | None) -> None:
        action = route.after.action
        if action == "leave":
            return
        if action == "delete":
            source.remove(name)
            if file_id is not None:
                self.journal.transition(file_id, State.DELETED)
            return
        folder = safe_subfolder(route.after.folder.format(date=self.now()))
        moved = source.move(name, folder)
        if file_id is not None:
            self.journal.transition(file_id, State.ARCHIVED, note=moved)

    def _quarantine(
        self,
        route: RouteConfig,
        record: FileRecord,
        name: str,
        original: Path,
        exc: XchangeError,
        result: FileResult,
    ) -> None:
        entry = self.quarantine.put(
            route=route.name,
            file_id=record.id,
            source=name,
            original=original,
            error=exc,
            attempt=record.attempts,
            config_file=str(self.config.source_file),
            versions=self.pipelines[route.name].versions,
        )
        self.journal.transition(
            record.id,
            State.QUARANTINED,
            error=(exc.kind, str(exc)),
            quarantine_path=str(entry.data_path),
        )
        # The bytes are safe in quarantine: take the file out of the drop folder.
        self.remote(route.source.endpoint).remove(name)
        result.outcome = QUARANTINED
        result.error = str(exc).splitlines()[0]


def _fingerprint(path: Path) -> tuple[int, str]:
    """Size and sha256 of a local file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()
