"""Which quarantined files may heal by themselves, and why (not).

A quarantined record keeps the versions that judged it (layouts, mapping, route settings
and master data, each with a hash of its content) and the cause it failed on. It is
checked again when what judged it has changed, or, when it was given up on a transient
cause, once the target answers again. The runner does the re-checking; this module only
says what applies to a record.
"""

from __future__ import annotations

from pathlib import Path

from xchange.config import RouteConfig
from xchange.errors import RETRYABLE_KINDS
from xchange.journal import FileRecord

#: Causes that say nothing of the file (the retryable ones): a file given up on one of
#: them is tried again once its target answers.
TRANSIENT = RETRYABLE_KINDS


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
