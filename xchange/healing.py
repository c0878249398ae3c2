"""Which quarantined files may heal by themselves, and why (not).

A quarantined record keeps the versions that judged it (layouts, mapping, route settings
and master data, each with a hash of its content) and the cause it failed on. It is
checked again when what judged it has changed, or, when it was given up on a transient
cause, once the target answers again. :func:`healing` says what applies to a record;
:class:`Healer` re-checks a route's candidates at the start of a look.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from xchange.alerts import Alerter
from xchange.config import RouteConfig
from xchange.errors import RETRYABLE_KINDS, ManifestDiffers, XchangeError
from xchange.journal import FileRecord, Journal, State
from xchange.results import DELIVERED, DUPLICATE, RETRY_LATER, FileResult
from xchange.transfer import Transfer

log = structlog.get_logger(__name__)

#: Causes that say nothing of the file (the retryable ones): a file given up on one of
#: them is tried again once its target answers.
TRANSIENT = RETRYABLE_KINDS

#: Outcomes of a re-check that leave nothing of the file to deliver: delivered (on its
#: record, or its edited copy's), or its content delivered already (the record it was
#: delivered on is the outcome's ``file_id``).
SETTLED = frozenset({DELIVERED, DUPLICATE})


def what_changed(record: FileRecord, versions: tuple[str, str]) -> str:
    """What differs between the versions that judged ``record`` and ``versions``
    ("mapping oms-to-kingdee-sales-return changed"), or "" if nothing does."""
    layouts, mapping = versions
    changes = []
    if (record.layout_version or "") != layouts:
        changes.append(f"layouts {layouts.partition('#')[0]} changed")
    old_rules, _, old_lookups = (record.mapping_version or "").partition("+")
    new_rules, _, new_lookups = mapping.partition("+")
    old_mapping, _, old_route = old_rules.partition("/")
    new_mapping, _, new_route = new_rules.partition("/")
    if old_mapping != new_mapping:
        changes.append(f"mapping {new_mapping.partition('#')[0].partition('@')[0]} changed")
    elif old_route != new_route:
        changes.append("the route's target name or if_exists changed")
    if old_lookups != new_lookups:
        names = sorted({part.partition(":")[0] for part in new_lookups.split(",") if part})
        changes.append(f"master data {', '.join(names) or '(none now)'} changed")
    return " and ".join(changes)


def healing(
    record: FileRecord, route: RouteConfig | None, versions: tuple[str, str] | None
) -> tuple[bool, str]:
    """Whether a quarantined file will be tried again by itself, and why (not).
    ``versions``: those of the route's pipeline now (None: it does not load)."""
    if route is None:
        return False, "its route is no longer configured: quarantine retry or drop it"
    if not route.quarantine.auto_retry:
        return False, "quarantine.auto_retry is off for this route: quarantine retry it"
    if not record.quarantine_path or not Path(record.quarantine_path).is_file():
        return False, "no copy of it is kept: drop it into the source folder again"
    if versions is None:
        return False, "the route's layouts or mapping do not load now (xchange check)"
    if record.error_kind == ManifestDiffers.kind:
        return False, (
            "its partner's manifest says otherwise: the partner sends it again (with its "
            "manifest), or quarantine retry it to take it as it is"
        )
    changed = what_changed(record, versions)
    if changed:
        return True, f"{changed}: checked again at the next look"
    if record.error_kind in TRANSIENT:
        return True, (
            f"given up on a transient cause ({record.error_kind}): tried again once the "
            "target answers"
        )
    return False, (
        "the layouts, mapping and tables in use now judged it: fix them (it is then "
        "checked again) or the file (quarantine retry, drop)"
    )


class Healer:
    """Tries quarantined files again whose cause may be fixed."""

    def __init__(
        self,
        transfer: Transfer,
        alerter: Alerter,
        *,
        now: Callable[[], datetime],
        stop: threading.Event,
    ) -> None:
        self.transfer = transfer
        self.journal: Journal = transfer.journal
        self.alerter = alerter
        self.now = now
        self.stop = stop

    def heal(self, route: RouteConfig) -> list[FileResult]:
        """Quarantined files whose cause may be fixed, tried again from their kept copies:
        those judged by other layouts, mappings, value tables or master data than the
        current ones, and those given up on a transient cause once the target answers
        (one probe for all of them). What passes is delivered on its own record (exactly
        once); what fails stays with its report brought up to date. At most
        ``quarantine.batch`` files a look; heals cut short by a crash are resumed first.
        Returns each file's result."""
        if not route.quarantine.auto_retry or self.stop.is_set():
            return []
        versions = self.transfer.pipelines[route.name].versions
        candidates = self.journal.reconsider(
            route.name,
            layout_version=versions[0],
            mapping_version=versions[1],
            transient=TRANSIENT,
            transient_before=self.now() - timedelta(seconds=route.retry.later),
            limit=route.quarantine.batch,
        )
        # A file its partner's manifest disagrees with is not taken on a new mapping's word.
        candidates = [r for r in candidates if r.error_kind != ManifestDiffers.kind]
        if not candidates:
            return []
        waiting = [r for r in candidates if not what_changed(r, versions)]
        if waiting:
            try:
                self.transfer.sessions.remote(route.target.endpoint).connect()
            except XchangeError as exc:
                log.info("quarantine.target_still_down", files=len(waiting), error=exc.reason)
                candidates = [r for r in candidates if what_changed(r, versions)]
        why: dict[str, int] = {}
        results: list[FileResult] = []
        healed: list[FileResult] = []
        failing: list[FileResult] = []
        for record in candidates:
            if self.stop.is_set():
                break
            if not Path(record.quarantine_path or "").is_file():
                continue
            changed = what_changed(record, versions) or (
                "the target answered again" if record.state == State.QUARANTINED else ""
            )
            log.info("quarantine.recheck", file_id=record.id, source=record.path, why=changed)
            outcome = self.transfer.again(route, record, force=False)
            if outcome.outcome in SETTLED:
                healed.append(outcome)
                if changed:
                    why[changed] = why.get(changed, 0) + 1
            else:
                if outcome.outcome == RETRY_LATER:
                    self._back_to_quarantine(record, outcome)
                failing.append(outcome)
            results.append(outcome)
        if healed or any(what_changed(r, versions) for r in candidates):
            self.alerter.healed(
                route.name,
                len(healed),
                len(healed) + len(failing),
                " and ".join(sorted(why, key=lambda k: -why[k])),
                [f"{f.source}: {f.error}" for f in failing],
            )
        return results

    def _back_to_quarantine(self, record: FileRecord, outcome: FileResult) -> None:
        """A re-checked file left waiting for its target: its copy is in quarantine, not in
        a drop folder, so back there, tried again when the target answers. Written on the
        record the outcome is about (an edited copy's own, not ``record``, which it
        replaced)."""
        self.journal.transition(
            outcome.file_id or record.id,
            State.QUARANTINED,
            error=(outcome.cause or "error", outcome.error or ""),
            note="auto-retry: still failing",
        )
