"""When to try again: one backoff formula, and the callback's retry rules.

Pure functions, no clock and no I/O. The same exponential backoff paces the callback's quick
retries, its redelivery from the spool and the worker's restarts (see `supervisor.worker.state`).
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import NamedTuple

from supervisor.config import SpoolConfig

# The first quick retry of a callback comes after about this long.
QUICK_BASE_S = 1.0
# A Retry-After longer than this is read as this (a misconfigured server must not park us).
RETRY_AFTER_CAP_S = 300.0
RETRYABLE_STATUSES = frozenset({408, 429})


def backoff_s(step: int, base_s: float, cap_s: float = math.inf, jitter: float | None = None) -> float:
    """`base_s` doubling with each step (step 0: `base_s`), times a factor in [0.5, 1.5) when
    `jitter` (0..1) is given, capped at `cap_s`. Never overflows, whatever the step."""
    factor = 1.0 if jitter is None else 0.5 + jitter
    return min(base_s * 2.0 ** min(max(step, 0), 64) * factor, cap_s)


# --- callbacks -----------------------------------------------------------------------


def is_retryable(status: int) -> bool:
    """Worth another attempt: 408, 429 and 5xx. Any other 4xx is final (undeliverable)."""
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped at 300 s."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


class Retry(NamedTuple):
    delay_s: float
    from_spool: bool  # the quick retries are spent: the next attempt reads its body from disk


def after_failed_attempt(
    attempts: int,
    quick_attempts: int,
    spool: SpoolConfig,
    retry_after: float | None = None,
    jitter: float = 0.5,
    base_s: float = QUICK_BASE_S,
) -> Retry:
    """When to try a callback again after a failed attempt (not a final one).

    `attempts`: the attempts this delivery made in this process, the failed one included;
    `quick_attempts`: 1 + `callback.max_retries` for a fresh result, 0 for one found in the
    spool at start. Quick retries: from `base_s` doubling, with jitter, never longer than the
    spool's own pace. Then from the spool: `retry_initial_s` doubling to `retry_max_s`. A
    Retry-After wins when it is longer.
    """
    wait = retry_after or 0.0
    if attempts < quick_attempts:
        delay = max(backoff_s(attempts - 1, base_s, jitter=jitter), wait)
        return Retry(min(delay, max(spool.retry_max_s, wait)), from_spool=False)
    step = attempts - quick_attempts  # 0 for the first wait once the quick retries are spent
    return Retry(max(backoff_s(step, spool.retry_initial_s, spool.retry_max_s), wait), from_spool=True)
