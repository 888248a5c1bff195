"""Kill reasons, restart labels, and the reading of a worker's exit status."""

from __future__ import annotations

import signal

import pytest

from supervisor.metrics.registry import RESTART_REASONS
from supervisor.worker.reasons import RESTART_REASON, KillReason, RestartReason, describe_exit


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


def test_every_kill_reason_maps_to_a_metric_label_or_to_no_restart():
    assert set(RESTART_REASON) == set(KillReason)
    assert {label for label in RESTART_REASON.values() if label is not None} <= set(RestartReason)
    assert tuple(r.value for r in RestartReason) == RESTART_REASONS  # the metric's labels, defined once


@pytest.mark.parametrize("killed_for", list(KillReason))
def test_a_kill_we_made_is_never_called_a_possible_oom(killed_for):
    decoded = describe_exit(-signal.SIGKILL, killed_for)
    assert "out-of-memory" not in decoded.description
    assert killed_for.value in decoded.description
    assert decoded.reason != "oom_kill"


def test_the_restart_label_of_a_kill_and_of_a_stop():
    assert describe_exit(-signal.SIGKILL, KillReason.START_TIMEOUT).reason == "watchdog"
    assert describe_exit(-signal.SIGKILL, KillReason.HEARTBEAT).reason == "heartbeat"
    assert describe_exit(0, KillReason.RECYCLE).reason == "recycle"  # it exited by itself when asked
    # No restart follows a stop: the reason is the kill's own.
    assert describe_exit(-signal.SIGKILL, KillReason.DRAIN_DEADLINE).reason == "drain_deadline"


def test_a_start_that_failed_is_read_from_the_workers_status():
    decoded = describe_exit(4)
    assert decoded.startup_failed and "the backend could not load" in decoded.description
    assert not describe_exit(1).startup_failed and not describe_exit(-signal.SIGSEGV).startup_failed


def test_a_start_refused_for_good_is_read_as_permanent():
    decoded = describe_exit(6)
    assert decoded.startup_failed and decoded.permanent and "not retried" in decoded.description
    assert not describe_exit(4).permanent and not describe_exit(-signal.SIGKILL).permanent
