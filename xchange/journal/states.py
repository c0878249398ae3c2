"""The states of a file in the journal and the transitions allowed between them.

Every journal backend checks each write against :data:`TRANSITIONS` (see
:func:`check_transition`): a transition not in the table is a defect, raised as
:class:`~xchange.errors.IllegalTransition` before anything is written. Each transition is
committed *before* the side effect it announces, so that a restart resumes from the last
committed state::

    (new) -> processing -> delivering -> delivered -> archived | deleted
                 |             |
                 +-------------+--> retrying     transient; tried again at next_retry_at
                 +-------------+--> quarantined  permanent, or out of attempts -> dropped

    Any state may be written again with a note (``same content seen again``, ``due now``).
    processing again: a crash cut the file short (``processing``, ``delivering``), it is
    due again (``retrying``), taken back from quarantine (``quarantined``), sent again on
    purpose (``--force``: a done state), or its content, dropped by an operator, was put
    in a drop folder again (``dropped``).
    delivered again: an announced archive or delete did not happen (the source changed,
    or the move failed), so the records go back to delivered until it is done.
    quarantined from retrying: a file taken again from quarantine that still cannot be
    delivered goes back there.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from xchange.errors import IllegalTransition


class State(StrEnum):
    PROCESSING = "processing"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    ARCHIVED = "archived"
    DELETED = "deleted"
    RETRYING = "retrying"
    QUARANTINED = "quarantined"
    DROPPED = "dropped"


#: States in which the content counts as delivered on its route.
DONE_STATES = frozenset({State.DELIVERED, State.ARCHIVED, State.DELETED})

_S = State

#: state left (None: a new record) -> the states it may enter. Writing the same state
#: again (a note) is allowed from every state and not repeated here.
TRANSITIONS: Mapping[State | None, frozenset[State]] = {
    None: frozenset({_S.PROCESSING}),
    _S.PROCESSING: frozenset({_S.DELIVERING, _S.RETRYING, _S.QUARANTINED, _S.DROPPED}),
    _S.DELIVERING: frozenset({_S.PROCESSING, _S.DELIVERED, _S.RETRYING, _S.QUARANTINED}),
    _S.RETRYING: frozenset({_S.PROCESSING, _S.QUARANTINED, _S.DROPPED}),
    _S.QUARANTINED: frozenset({_S.PROCESSING, _S.DROPPED}),
    _S.DROPPED: frozenset({_S.PROCESSING}),
    _S.DELIVERED: frozenset({_S.ARCHIVED, _S.DELETED, _S.PROCESSING}),
    _S.ARCHIVED: frozenset({_S.DELIVERED, _S.PROCESSING}),
    _S.DELETED: frozenset({_S.DELIVERED, _S.PROCESSING}),
}


def allowed(old: State | str | None, new: State | str) -> bool:
    """Whether the journal may move a file from ``old`` (None: new) to ``new``."""
    before = None if old is None else State(old)
    after = State(new)
    return before == after or after in TRANSITIONS[before]


def check_transition(file_id: int | None, old: State | str | None, new: State | str) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in the table."""
    if not allowed(old, new):
        before = None if old is None else State(old)
        what = "a new record" if before is None else str(before)
        permitted = ", ".join(sorted(TRANSITIONS[before])) or "none"
        raise IllegalTransition(
            f"file #{file_id}: the journal does not allow {what} -> {State(new)} "
            f"(allowed from {what}: {permitted})"
        )


__all__ = ["DONE_STATES", "TRANSITIONS", "State", "allowed", "check_transition"]
