"""Who runs an operator command, and the journal's note of what they did and why.

Every command that changes what xchange does or did (``reprocess``, ``retry``,
``quarantine retry`` and ``drop``, ``trust``, ``reload``, ``journal prune`` and ``init
--fresh``) records who ran it, when, on which files or route, and the reason given with
``--reason`` (or that none was): ``xchange find`` and ``journal show`` say it.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from pathlib import Path

from xchange.errors import one_line
from xchange.journal import Action, FileRecord, Journal


def who() -> str:
    """The OS user running the command (``li``), by the process's real user id, not by
    variables anyone may set (``USER``, ``LOGNAME``); through sudo, the person first and
    the user they became (``li (sudo as xchange)``). ``SUDO_USER`` is believed only where
    it cannot have been made up: in a process of root's (sudo sets it), or where it names
    the user the system recorded at login (``/proc/self/loginuid``, which sudo keeps and
    the user cannot change); anyone may set it to anyone otherwise."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # (no name for this uid: a container's)
        user = f"uid {uid}"
    said = os.environ.get("SUDO_USER")
    through = said if said and (uid == 0 or said == _logged_in()) else None
    if through and through != user:
        return f"{one_line(through, 64)} (sudo as {user})"
    return user


def _logged_in() -> str | None:
    """The user this session logged in as, as the kernel's audit keeps it (None: not
    recorded, as in many containers)."""
    try:
        raw = Path("/proc/self/loginuid").read_text(encoding="ascii").strip()
    except OSError:
        return None
    if not raw.isdigit() or int(raw) == 0xFFFFFFFF:
        return None
    try:
        return pwd.getpwuid(int(raw)).pw_name
    except KeyError:
        return None


def record(
    journal: Journal,
    action: str,
    reason: str | None,
    *,
    files: Iterable[FileRecord] = (),
    route: str | None = None,
    detail: str | None = None,
) -> None:
    """Note in the journal that :func:`who` did ``action`` (to ``files``, or to a route
    or the whole) for ``reason``."""
    journal.actions.record(
        action,
        who=who(),
        reason=reason,
        files=[(f.id, f.route) for f in files],
        route=route,
        detail=detail,
    )


def describe(action: Action, *, file: bool = True) -> str:
    """One action in words, in local time: ``2026-12-07 10:02:11 reprocess (--force) on #1
    (shop-orders) by li: partner asked`` (``file``: name the file and route)."""
    when = action.at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    what = action.action + (f" ({action.detail})" if action.detail else "")
    if file and action.file_id is not None:
        what += f" on #{action.file_id} ({action.route})"
    elif file and action.route is not None:
        what += f" on route {action.route}"
    return f"{when} {what} by {action.who}: {action.reason}"


__all__ = ["describe", "record", "who"]
