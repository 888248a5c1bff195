from __future__ import annotations

import signal

import pytest

from supervisor.worker_state import (
    InvalidTransition,
    RestartPolicy,
    StateMachine,
    WorkerState as S,
    describe_exit,
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


@pytest.mark.parametrize(
    "returncode, reason, words",
    [
        (0, "exit", "status 0"),
        (4, "exit", "status 4"),
        (-signal.SIGKILL, "oom_kill", "out-of-memory"),
        (-signal.SIGSEGV, "signal", "SIGSEGV"),
        (-signal.SIGABRT, "signal", "SIGABRT"),
        (-200, "signal", "signal 200"),
    ],
)
def test_exit_status_decoding(returncode, reason, words):
    decoded = describe_exit(returncode)
    assert decoded.reason == reason
    assert words in decoded.description
