"""The one retry policy, for retryable errors only: within a run, exponential backoff with
jitter (:func:`call_with_retry`); across runs, a doubling wait before the next run takes
the file again (:func:`next_try`), and quarantine once the attempts run out
(:func:`gives_up`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import structlog
import tenacity

from xchange.config import RetrySpec
from xchange.errors import XchangeError

T = TypeVar("T")
log = structlog.get_logger(__name__)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, XchangeError) and exc.retryable


def call_with_retry(
    fn: Callable[[], T], policy: RetrySpec, *, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Call ``fn``; on a retryable :class:`XchangeError` wait and call again, up to
    ``policy.attempts`` calls in all; the last error is raised as it is."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "retry.waiting",
            attempt=state.attempt_number,
            of=policy.attempts,
            wait_s=round(state.next_action.sleep if state.next_action else 0, 2),
            error=str(exc),
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        # initial, 2*initial, 4*initial ... capped at maximum, plus up to `initial` of jitter.
        wait=tenacity.wait_exponential(multiplier=policy.initial, max=policy.maximum)
        + tenacity.wait_random(0, policy.initial),
        retry=tenacity.retry_if_exception(is_retryable),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )
    return retrying(fn)


def gives_up(policy: RetrySpec, attempts: int) -> bool:
    """Whether a file that failed ``attempts`` times on a transient cause is quarantined
    now instead of waiting for another run."""
    return attempts >= policy.give_up_after


def next_try(policy: RetrySpec, attempts: int, now: datetime) -> datetime:
    """When a file that failed ``attempts`` times on a transient cause is due again:
    ``later`` seconds after the first failure, doubling, at most ``later_max``."""
    delay = min(policy.later * 2 ** max(attempts - 1, 0), policy.later_max)
    return now + timedelta(seconds=delay)
