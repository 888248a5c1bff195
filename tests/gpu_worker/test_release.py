from __future__ import annotations

from gpu_worker.release import ReleaseSchedule


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_is_released_before_a_job_ran():
    schedule = ReleaseSchedule(10.0, Clock())
    assert not schedule.due() and schedule.wait_s() is None  # the job thread waits for work


def test_after_a_job_at_once_then_at_most_every_interval_as_the_engines_loop():
    clock = Clock()
    schedule = ReleaseSchedule(10.0, clock)
    schedule.job_done()
    assert schedule.due()  # the first time: at once
    schedule.released()
    clock.now += 4
    schedule.job_done()
    assert not schedule.due() and schedule.wait_s() == 6.0  # idle until 10 s after the last one
    clock.now += 6
    assert schedule.due() and schedule.wait_s() == 0.0
    schedule.released()
    assert schedule.wait_s() is None
