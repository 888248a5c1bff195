"""When to try again: the one backoff formula and the callback's retry rules (pure)."""

from __future__ import annotations

import email.utils
import time

import pytest

from supervisor.config import SpoolConfig
from supervisor.delivery.retry_policy import after_failed_attempt, backoff_s, is_retryable, parse_retry_after
from supervisor.worker.state import RestartPolicy


def test_backoff_doubles_with_jitter_between_half_and_one_and_a_half():
    assert [backoff_s(n - 1, 1.0, jitter=0.5) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_s(0, 1.0, jitter=0.0) == 0.5
    assert backoff_s(2, 1.0, jitter=0.999) < 6.0


@pytest.mark.parametrize("status, retry", [(408, True), (429, True), (500, True), (503, True), (599, True),
                                           (400, False), (401, False), (404, False), (413, False), (422, False)])
def test_which_statuses_are_retried(status, retry):
    assert is_retryable(status) is retry


def test_parse_retry_after():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("100000") == 300.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31


def test_spool_delays_double_up_to_the_cap():
    assert [backoff_s(n, 30, 600) for n in range(7)] == [30, 60, 120, 240, 480, 600, 600]


def test_spool_delay_after_years_of_failures_is_still_the_cap():
    assert backoff_s(5000, 30, 600) == 600


SPOOL = SpoolConfig(retry_initial_s=30, retry_max_s=600)


def schedule(quick_attempts: int, failures: int, retry_after: float | None = None) -> list[tuple[float, bool]]:
    return [
        tuple(after_failed_attempt(n, quick_attempts, SPOOL, retry_after, jitter=0.5)) for n in range(1, failures + 1)
    ]


def test_one_schedule_quick_retries_then_the_spool():
    # max_retries 3: 4 quick attempts, 1 s doubling between them; then 30 s doubling to 600 s.
    assert schedule(4, 10) == [
        (1, False), (2, False), (4, False), (30, True), (60, True), (120, True), (240, True), (480, True),
        (600, True), (600, True),
    ]


def test_a_result_found_in_the_spool_at_start_is_redelivered_at_the_spools_pace():
    # Its first attempt came at once; the waits after it follow the spool's backoff.
    assert schedule(0, 3) == [(60, True), (120, True), (240, True)]


def test_a_longer_retry_after_wins_and_quick_retries_never_wait_past_the_spools_pace():
    assert schedule(4, 1, retry_after=7) == [(7, False)]
    assert after_failed_attempt(4, 4, SPOOL, retry_after=90).delay_s == 90  # from the spool: 30 < 90
    many = after_failed_attempt(15, 21, SpoolConfig(retry_initial_s=30, retry_max_s=60), jitter=0.5)
    assert many == (60, False)  # 2**14 s, capped at the spool's retry_max_s


def test_the_worker_restarts_on_the_same_formula():
    policy = RestartPolicy(max_backoff_s=60, healthy_after_s=60)
    delays = [policy.next_delay(ran_for_s=1) for _ in range(8)]
    assert delays == [0] + [backoff_s(n, 1.0, 60) for n in range(7)] == [0, 1, 2, 4, 8, 16, 32, 60]
