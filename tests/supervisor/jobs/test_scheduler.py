from __future__ import annotations

from supervisor.jobs.job import Job, JobOptions
from supervisor.jobs.scheduler import Scheduler


def job(n: int) -> Job:
    return Job(f"j{n}", "u", "s", "qwen", JobOptions(), b"p", b"g", accepted_mono=float(n))


def test_idle_node_takes_one_job_and_refuses_the_next_with_no_queue():
    s = Scheduler(max_pending=0)
    assert s.idle and not s.busy
    a, b = job(1), job(2)
    assert s.admit(a) == 0
    assert s.admit(b) is None
    assert s.busy and s.current is a and s.queue_length == 0


def test_queue_positions_and_order():
    s = Scheduler(max_pending=2)
    jobs = [job(i) for i in range(5)]
    assert [s.admit(j) for j in jobs] == [0, 1, 2, None, None]
    s.finish(jobs[0])
    assert s.current is jobs[1] and s.queue_length == 1
    assert s.admit(jobs[3]) == 2
    s.finish(jobs[1])
    s.finish(jobs[2])
    s.finish(jobs[3])
    assert s.idle


def test_finish_of_a_job_not_holding_the_slot_is_a_bug():
    s = Scheduler(max_pending=1)
    a, b = job(1), job(2)
    s.admit(a)
    s.admit(b)
    try:
        s.finish(b)
    except RuntimeError:
        pass
    else:
        raise AssertionError("finish(b) should raise")


def test_take_pending_empties_the_queue_but_not_the_slot():
    s = Scheduler(max_pending=3)
    jobs = [job(i) for i in range(3)]
    for j in jobs:
        s.admit(j)
    assert s.take_pending() == jobs[1:]
    assert s.current is jobs[0] and s.queue_length == 0


def test_retry_after_follows_how_long_jobs_hold_the_slot():
    s = Scheduler(max_pending=0)
    assert s.retry_after_s() == 1  # nothing known yet
    for n in range(10):
        j = job(n)
        s.admit(j)
        s.finish(j, held_s=12.0)
    assert s.retry_after_s() == 12
    j = job(99)
    s.admit(j)
    s.finish(j, held_s=10_000)
    assert s.retry_after_s() == 600  # capped


def test_remove_pending_takes_only_a_waiting_job():
    s = Scheduler(max_pending=2)
    a, b, c = job(1), job(2), job(3)
    s.admit(a), s.admit(b), s.admit(c)
    assert s.remove_pending(b) is True and s.queue_length == 1
    assert s.remove_pending(b) is False  # not waiting any more
    assert s.remove_pending(a) is False and s.current is a  # holds the slot: not the queue's
    s.finish(a)
    assert s.current is c
