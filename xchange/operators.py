"""Who runs an operator command, and the journal's note of what they did and why.

Every command that changes what xchange does or did (``reprocess``, ``retry``,
``quarantine retry`` and ``drop``, ``trust``, ``reload``, ``journal prune`` and ``init
--fresh``) records who ran it, when, on which files or route, and the reason given with
``--reason`` (or that none was): ``xchange find`` and ``journal show`` say it.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable

from xchange.journal import FileRecord, Journal


def who() -> str:
    """The OS user running the command (``li``); through sudo, the person first and the
    user they became (``li (sudo as xchange)``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # (no name for this uid: a container's)
        user = f"uid {os.getuid()}"
    through = os.environ.get("SUDO_USER")
    if through and through != user:
        return f"{through} (sudo as {user})"
    return user


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


__all__ = ["record", "who"]
