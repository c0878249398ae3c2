"""Putting a file's outputs on its target: hidden temporary name, one rename, the
``if_exists`` policy, and recognition of an output a crash left delivered.

Each output's temporary name is the same on every try of this journal's delivery (so a
restart resumes it) and another for any other journal's. An output the journal has is
not sent again; one found on the target with the very same bytes is recognised, not
re-sent.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from xchange import progress
from xchange.config import RouteConfig
from xchange.errors import RemoteError, TargetExists
from xchange.faults import checkpoint
from xchange.journal import FileRecord, Journal, OutputRecord
from xchange.remote import Remote, SmallPut
from xchange.remote.base import NullWriter, Verify, check_for, temp_name_for
from xchange.retry import call_with_retry
from xchange.sink import Output

log = structlog.get_logger(__name__)

#: Outputs of one file up to this size go in pipelined flights of up to PIPELINE_FILES.
PIPELINE_MAX = 1 << 20
PIPELINE_FILES = 64


def temp_token(journal_id: str, record: FileRecord, out: Output) -> str:
    """The token of an output's temporary name: the same on every try of this journal's
    delivery of this content, another for any other journal's."""
    return f"{journal_id[:6]}{record.sha256[:6]}{out.sha256[:6]}"


def output_record(
    route: RouteConfig, name: str, size: int, sha256: str, at: datetime, *, watched: bool = True
) -> OutputRecord:
    """How an output delivered on ``route`` is journaled (waiting for its partner when
    the target's partner collects, and it is a file the partner takes: ``watched``; a
    checksum file beside a data file is not)."""
    return OutputRecord(
        route.target.endpoint,
        name,
        size,
        sha256,
        at,
        pickup="waiting" if route.target.collected and watched else None,
    )


def looks_first(policy: str, record: FileRecord) -> bool:
    """Whether ``record``'s outputs are looked for on the target before they are sent: on
    a later attempt with ``overwrite`` (a try the journal did not see finish may have put
    them there; without ``overwrite`` the target's refusal of a taken name says so)."""
    return policy == "overwrite" and record.attempts > 1


def verify_of(route: RouteConfig) -> Verify | None:
    """The target's verification of each delivered file (None: its size, as always)."""
    spec = route.target
    return None if spec.verify == "size" else Verify(spec.verify, int(spec.readback_max))


def verified(route: RouteConfig, target: Remote, outputs: list[Output]) -> str | None:
    """What the journal says of how ``outputs`` were verified on ``target`` (None for the
    size alone, the default): ``verified: sha512 computed by the server (2 files)``."""
    verify = verify_of(route)
    if verify is None or not outputs:
        return None
    hashes = target.capabilities().server_hashes
    ways: dict[str, int] = {}
    for out in outputs:
        way = check_for(verify, out.size, hashes).describe()
        ways[way] = ways.get(way, 0) + 1
    said = ", ".join(f"{way} ({n} file{'s' if n > 1 else ''})" for way, n in ways.items())
    return f"verified: {said}"


def sidecar_for(out: Output, final: str) -> Output:
    """``FINAL.sha256`` in ``sha256sum`` format (``<hex>  NAME``), for the output
    delivered as ``final``."""
    content = f"{out.sha256}  {posixpath.basename(final)}\n".encode()
    return Output(
        f"{final}.sha256",
        len(content),
        hashlib.sha256(content).hexdigest(),
        0,
        content=content,
    )


def already_there(target: Remote, out: Output, name: str) -> bool:
    """True if the target already holds exactly these bytes under ``name``."""
    info = target.stat(name)
    if info is None or info.size != out.size:
        return False
    probe = NullWriter()
    target.download(name, probe)  # type: ignore[arg-type]
    return probe.sha.hexdigest() == out.sha256


class Delivery:
    """Delivers outputs for one journal, recording each in it as it lands."""

    def __init__(
        self,
        journal: Journal,
        *,
        sleep: Callable[[float], None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.journal = journal
        self.journal_id = journal.journal_id
        self.sleep = sleep
        self.now = now

    def temp_token(self, record: FileRecord, out: Output) -> str:
        return temp_token(self.journal_id, record, out)

    def deliver(
        self,
        route: RouteConfig,
        target: Remote,
        record: FileRecord,
        outputs: list[Output],
        *,
        force: bool,
    ) -> None:
        """Put every output the journal does not have yet, recording each as it lands.
        Small outputs of one file go PIPELINE_FILES at a time on one session (as small
        files of copy routes do: many files in flight, a few round trips for all); an
        output the pipeline could not put (a taken name, a failure) goes on alone, where
        the if_exists policy, retries and recognition of a delivery made before a crash
        apply."""
        done = set() if force else {o.path for o in record.outputs}
        todo = [o for o in outputs if o.name not in done]
        if route.target.collected:
            self._settle_pickups(route, target, todo)
        #: Outputs found on the target with their very bytes (read back), not sent now.
        found: set[int] = set()
        finals = self._send(route, target, record, todo, force, found=found)
        sent = [out for out, _ in finals]
        if route.target.sidecar == "sha256":
            # Each data file's checksum file, after it: of those sent now, and of those
            # an earlier try sent whose checksum file did not go yet.
            finals += [(o, o.name) for o in outputs if o.name in done]
            sidecars = [sidecar_for(out, final) for out, final in finals]
            todo = [o for o in sidecars if o.name not in done]
            sent += [
                out
                for out, _ in self._send(
                    route, target, record, todo, force, watched=False, found=found
                )
            ]
        note = verified(route, target, [o for o in sent if id(o) not in found])
        if found:
            seen = f"{len(found)} found on the target with the same bytes (read back, sha256)"
            note = f"{note}; {seen}" if note else f"verified: {seen}"
        if note is not None:
            self.journal.note(record.id, note)

    def _send(
        self,
        route: RouteConfig,
        target: Remote,
        record: FileRecord,
        todo: list[Output],
        force: bool,
        *,
        watched: bool = True,
        found: set[int] | None = None,
    ) -> list[tuple[Output, str]]:
        """Put ``todo``, recording each as it lands; return each output put and its final
        name (an output if_exists = skip left out is not among them)."""
        policy = "overwrite" if force else route.target.if_exists
        # A later attempt with overwrite looks before sending (deliver_one): not piped.
        pipe = not looks_first(policy, record)
        order = {id(o): i for i, o in enumerate(todo)}
        small = [o for o in todo if pipe and o.size <= PIPELINE_MAX] if len(todo) > 1 else []
        piped = {id(o) for o in small}
        alone = [o for o in todo if id(o) not in piped]
        finals: list[tuple[Output, str]] = []
        for start in range(0, len(small), PIPELINE_FILES):
            flight = small[start : start + PIPELINE_FILES]
            rest = self._piped(route, target, record, flight, policy == "overwrite", watched)
            alone += rest
            finals += [(o, o.name) for o in flight if o not in rest]
        for out in sorted(alone, key=lambda o: order[id(o)]):
            final = self.deliver_one(route, record, target, out, force=force, found=found)
            if final is None:
                continue
            at = self.now().astimezone(UTC)
            self.journal.record_output(
                record.id,
                output_record(route, final, out.size, out.sha256, at, watched=watched),
            )
            checkpoint("after-output")
            finals.append((out, final))
        return sorted(finals, key=lambda f: order[id(f[0])])

    def _settle_pickups(self, route: RouteConfig, target: Remote, todo: list[Output]) -> None:
        """Before names are delivered again: an output still waiting for its partner under
        one of them is collected if the name is free on the target now (the new delivery
        does not replace it; the partner took it), else the new one replaces it."""
        now = self.now().astimezone(UTC)
        for out in todo:
            waiting = self.journal.pickups.at(route.target.endpoint, out.name)
            if waiting and target.stat(out.name) is None:
                self.journal.pickups.collected(waiting, now)

    def _piped(
        self,
        route: RouteConfig,
        target: Remote,
        record: FileRecord,
        outputs: list[Output],
        overwrite: bool,
        watched: bool = True,
    ) -> list[Output]:
        """Put outputs in one pipelined flight; record those in place; return the rest."""
        self.journal.confirm(record.id)  # (small files: their renames follow at once)
        puts = [
            SmallPut(
                o.name,
                o.data,
                temp_name_for(o.name, self.temp_token(record, o)),
                overwrite,
                route.target.permissions,
                verify_of(route),
            )
            for o in outputs
        ]
        try:
            errors = target.put_many(puts)
        except RemoteError as exc:
            log.info("file.outputs_alone", outputs=len(outputs), reason=exc.reason)
            return outputs
        checkpoint("after-rename")
        rest = []
        for out, error in zip(outputs, errors, strict=True):
            if error is not None:
                rest.append(out)
                continue
            at = self.now().astimezone(UTC)
            self.journal.record_output(
                record.id,
                output_record(route, out.name, out.size, out.sha256, at, watched=watched),
            )
            checkpoint("after-output")
        return rest

    def abandon(
        self, route: RouteConfig, target: Remote, record: FileRecord, outputs: list[Output]
    ) -> None:
        """A file given up on: the temporary files its cut uploads kept on the target for
        a resume are removed, or named in the log when the target cannot be reached
        (nothing is left under a hidden name without a word)."""
        temps = [temp_name_for(o.name, self.temp_token(record, o)) for o in outputs]
        try:
            errors = target.remove_many(temps)
        except RemoteError as exc:
            errors = [exc] * len(temps)
        left = [(t, e) for t, e in zip(temps, errors, strict=True) if e is not None]
        if left:
            log.warning(
                "file.partials_left",
                target=route.target.endpoint,
                files=[t for t, _ in left],
                reason=f"given up on; its partial uploads could not be removed: {left[0][1]}",
            )

    def deliver_one(
        self,
        route: RouteConfig,
        record: FileRecord,
        target: Remote,
        out: Output,
        *,
        force: bool,
        found: set[int] | None = None,
    ) -> str | None:
        """Put one output under its name (or, with if_exists = unique, the first free
        variant); return the name used, or None if if_exists = skip left it out. An
        output found there with its very bytes is not sent again (``found`` gets its id)."""
        policy = "overwrite" if force else route.target.if_exists
        stem, dot, ext = out.name.rpartition(".")
        candidates = [out.name]
        if policy == "unique":
            candidates += [
                f"{stem}_{n}.{ext}" if dot else f"{out.name}_{n}" for n in range(1, 1000)
            ]
        # A file already on the target with these very bytes is this delivery, made before a
        # crash: recognise it instead of sending it again. Without overwrite the target says
        # so by refusing the name; with overwrite, look first when this is a later attempt.
        for name in candidates:
            if looks_first(policy, record) and already_there(target, out, name):
                if found is not None:
                    found.add(id(out))
                log.info(
                    "file.output_found",
                    output=name,
                    reason="present with the same bytes; not sent again",
                )
                return name
            temp = temp_name_for(name, self.temp_token(record, out))
            try:
                call_with_retry(
                    functools.partial(
                        _put,
                        target,
                        out,
                        name,
                        temp,
                        policy == "overwrite",
                        route.target.permissions,
                        functools.partial(self.journal.confirm, record.id),
                        verify_of(route),
                    ),
                    route.retry,
                    sleep=self.sleep,
                )
            except TargetExists:
                if already_there(target, out, name):
                    if found is not None:
                        found.add(id(out))
                    log.info(
                        "file.output_found",
                        output=name,
                        reason="present with the same bytes; not sent again",
                    )
                    return name
                if policy == "unique":
                    continue
                if policy == "skip":
                    log.warning(
                        "file.output_skipped",
                        output=name,
                        reason="a different file already has this name",
                    )
                    return None
                raise
            checkpoint("after-rename")
            return name
        raise TargetExists(f"{route.target.endpoint}: no free name left for {out.name}")


def _put(
    target: Remote,
    out: Output,
    name: str,
    temp: str,
    overwrite: bool,
    mode: int | None,
    confirm: Callable[[], None],
    verify: Verify | None,
) -> None:
    with out.open() as src, progress.moving(f"uploading {name}", out.size):
        target.put_atomic(
            name,
            src,
            out.size,
            temp_name=temp,
            overwrite=overwrite,
            mode=mode,
            before_rename=confirm,
            verify=verify,
            sha256=out.sha256,
        )


__all__ = [
    "Delivery",
    "already_there",
    "looks_first",
    "output_record",
    "sidecar_for",
    "temp_token",
    "verified",
    "verify_of",
]
