from __future__ import annotations

import pytest

from supervisor.worker.state import (
    InvalidTransition,
    RestartPolicy,
    StateMachine,
    WorkerState as S,
)


def test_a_normal_life_is_allowed_and_every_change_reported():
    seen = []
    machine = StateMachine(lambda old, new, why: seen.append((old, new, why)))
    for state in (S.STARTING, S.READY, S.BUSY, S.READY, S.RESTARTING, S.STARTING, S.READY, S.STOPPED):
        machine.change(state, "test")
    assert [new for _, new, _ in seen] == [S.STARTING, S.READY, S.BUSY, S.READY, S.RESTARTING, S.STARTING, S.READY, S.STOPPED]
    assert seen[0][0] is S.STOPPED


def test_same_state_is_not_a_change():
    seen = []
    machine = StateMachine(lambda *a: seen.append(a))
    machine.change(S.STARTING, "x")
    machine.change(S.STARTING, "y")
    assert len(seen) == 1


@pytest.mark.parametrize(
    "path",
    [(S.READY,), (S.STARTING, S.BUSY), (S.STARTING, S.FAILED, S.READY), (S.STARTING, S.READY, S.STARTING)],
)
def test_impossible_transitions_raise(path):
    machine = StateMachine(lambda *a: None)
    with pytest.raises(InvalidTransition):
        for state in path:
            machine.change(state, "test")


def test_restart_at_once_after_a_healthy_run_then_back_off_doubling_to_the_cap():
    policy = RestartPolicy(max_backoff_s=5, healthy_after_s=60)
    assert policy.next_delay(ran_for_s=3600) == 0
    assert [policy.next_delay(ran_for_s=1) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert policy.next_delay(ran_for_s=60) == 0  # healthy again: the count starts over
    assert policy.next_delay(ran_for_s=1) == 1


def test_first_crash_after_start_restarts_at_once():
    assert RestartPolicy(60, 60).next_delay(ran_for_s=0.1) == 0


def test_a_worker_going_from_serving_straight_to_failed_is_allowed():
    for serving in (S.READY, S.BUSY):
        machine = StateMachine(lambda *a: None)
        for state in (S.STARTING, S.READY, serving, S.FAILED, S.STOPPED):
            machine.change(state, "test")
        assert machine.state is S.STOPPED


def test_crash_loop_is_more_than_max_restarts_within_the_window():
    policy = RestartPolicy(60, 60, max_restarts=3, restart_window_s=10)
    assert [policy.record_crash(t) for t in (0.0, 1.0, 2.0)] == [False, False, False]
    assert policy.record_crash(3.0) is True  # the fourth within 10 s


def test_crashes_older_than_the_window_are_forgotten():
    policy = RestartPolicy(60, 60, max_restarts=2, restart_window_s=10)
    assert not policy.record_crash(0.0)
    assert not policy.record_crash(5.0)
    assert not policy.record_crash(10.0)  # the one at 0 s is out of the window
    assert policy.recent_crashes == 2
    assert policy.record_crash(11.0)


def test_zero_restarts_allowed_gives_up_at_the_first_crash():
    assert RestartPolicy(60, 60, max_restarts=0, restart_window_s=600).record_crash(0.0)


def test_reconfigure_keeps_the_history():
    policy = RestartPolicy(60, 60, max_restarts=5, restart_window_s=600)
    for t in (0.0, 1.0, 2.0):
        policy.record_crash(t)
    policy.reconfigure(30, 30, max_restarts=2, restart_window_s=600)
    assert policy.max_backoff_s == 30
    assert policy.record_crash(3.0)


def test_a_first_spawn_that_fails_may_give_up_at_once():
    machine = StateMachine(lambda *a: None)
    machine.change(S.FAILED, "max_restarts 0 and the fork failed")
    assert machine.state is S.FAILED


def test_a_long_run_before_a_recycle_resets_the_crash_count():
    policy = RestartPolicy(max_backoff_s=60, healthy_after_s=60)
    for _ in range(3):
        policy.next_delay(ran_for_s=1)
    policy.note_run(ran_for_s=120)  # recycled after a healthy run
    assert policy.next_delay(ran_for_s=1) == 0
