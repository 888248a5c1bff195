from __future__ import annotations

from supervisor.worker.generation import Stage
from supervisor.worker.watchdog import Watchdog

dog = Watchdog(inference_timeout_s=10, heartbeat_timeout_s=3, stage_timeout_s=5)


def model(since: float, job_id: str = "j") -> list:
    return [(job_id, Stage.MODEL, since)]


def test_an_idle_worker_that_beats_is_left_alone():
    assert dog.check(now=100.0, last_heard=99.0) is None


def test_a_silent_worker_is_killed_for_its_heartbeat():
    verdict = dog.check(now=100.0, last_heard=96.5)
    assert verdict is not None
    assert verdict.reason == "heartbeat" and verdict.job_id is None
    assert "3.5 s" in verdict.message


def test_a_job_over_its_time_is_killed_by_the_watchdog_even_while_beating():
    verdict = dog.check(now=100.0, last_heard=99.9, jobs=model(89.0))
    assert verdict is not None
    assert verdict.reason == "watchdog" and verdict.job_id == "j"
    assert "inference_timeout_s" in verdict.message


def test_a_job_within_its_time_is_left_alone():
    assert dog.check(now=100.0, last_heard=99.9, jobs=model(91.0)) is None


def test_prepare_and_finish_have_the_stage_timeout_and_name_their_stage():
    jobs = [("a", Stage.PREPARE, 96.0), ("b", Stage.MODEL, 95.0), ("c", Stage.FINISH, 94.0)]
    verdict = dog.check(now=100.0, last_heard=99.9, jobs=jobs)
    assert verdict is not None and verdict.job_id == "c" and verdict.reason == "watchdog"
    assert "finish stage" in verdict.message and "worker.stage_timeout_s (5 s)" in verdict.message
    # A job prepared and waiting spends nothing of the model's time: the limit runs from its start.
    assert dog.check(now=100.0, last_heard=99.9, jobs=[("a", Stage.PREPARE, 96.0), ("b", Stage.MODEL, 95.0)]) is None


def test_silence_wins_over_a_long_job():
    # Both limits passed: the worker as a whole is stuck, which says more.
    verdict = dog.check(now=100.0, last_heard=90.0, jobs=model(80.0))
    assert verdict is not None and verdict.reason == "heartbeat"


def test_next_check_comes_at_the_earlier_deadline():
    assert abs(dog.next_check_in(now=100.0, last_heard=99.0) - 2.01) < 1e-9
    assert abs(dog.next_check_in(now=100.0, last_heard=99.0, jobs=model(91.5)) - 1.51) < 1e-9
    assert abs(dog.next_check_in(now=100.0, last_heard=99.0, jobs=[("f", Stage.FINISH, 96.0)]) - 1.01) < 1e-9


def test_next_check_never_asks_for_a_busy_loop():
    assert dog.next_check_in(now=200.0, last_heard=0.0, jobs=model(0.0)) > 0
