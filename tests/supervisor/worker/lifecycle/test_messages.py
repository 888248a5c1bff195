"""What a worker's messages do in the lifecycle core (supervisor/worker/lifecycle/messages.py), on a
fake clock: results and progress for the job the sending generation holds and nothing else,
a worker out of step (another protocol, an unreadable message, a late frame of a dead
generation), a start that fails with the worker's own reason."""

from __future__ import annotations

import signal
from typing import get_args

from ipc.messages import PROTOCOL_VERSION, Hello, JobProgress, WorkerMessage
from supervisor.worker.lifecycle import events as lifecycle_events
from supervisor.worker.lifecycle.core import Lifecycle
from supervisor.worker.lifecycle.events import CountRestart, EndJob, JobOffered, ReportProgress, Start, Undecodable
from supervisor.worker.state import WorkerState as S
from tests.support.lifecycle_driver import Driver

SIGKILL, SIGSEGV = -signal.SIGKILL, -signal.SIGSEGV


def restarts(d: Driver) -> list[str]:
    return [a.reason.value for a in d.of(CountRestart)]


def test_every_message_a_worker_can_send_has_a_rule():
    for kind in get_args(WorkerMessage):
        assert callable(getattr(Lifecycle, lifecycle_events.handler_name("got_", kind))), kind


# --- results and progress ------------------------------------------------------------


def test_a_result_for_another_job_is_logged_and_ignored():
    d = Driver().start()
    d.feed(JobOffered("mine"))
    d.succeed(1, "someone-else")
    assert d.logs("worker_result_unexpected") and d.core.state is S.BUSY and not d.of(EndJob)
    d.succeed(1, "mine")
    assert d.ended("mine").ok and d.core.state is S.READY


def test_a_job_failure_from_the_worker_keeps_the_worker():
    d = Driver().start()
    d.feed(JobOffered("oom"))
    d.fail(1, "oom", "out_of_memory")
    assert d.ended("oom").error_code == "out_of_memory" and d.core.state is S.READY and d.kills() == []


def test_progress_goes_to_the_job_its_worker_holds_and_nowhere_else():
    d = Driver().start()
    d.feed(JobOffered("j1"))
    assert d.message(1, JobProgress(job_id="j1", step=2, total=8)) == [ReportProgress("j1", 2, 8)]
    assert d.message(1, JobProgress(job_id="j0", step=8, total=8)) == []  # a job it no longer holds
    d.advance(1)
    assert d.of(ReportProgress, d.heartbeat(1)) == [] and d.core.state is S.BUSY
    d.succeed(1, "j1")
    assert d.message(1, JobProgress(job_id="j1", step=8, total=8)) == []  # crossed its result
    # A worker that died: its late report is dropped, the next worker's job is not touched.
    d.feed(JobOffered("j2"))
    d.exit(1, SIGSEGV)
    d.bring_up(2)
    d.feed(JobOffered("j3"))
    assert d.of(ReportProgress, d.message(1, JobProgress(job_id="j3", step=1, total=4))) == []
    assert d.message(2, JobProgress(job_id="j3", step=1, total=4)) == [ReportProgress("j3", 1, 4)]


def test_a_result_that_races_its_kill_still_ends_the_job_with_it():
    d = Driver(heartbeat_timeout_s=3).start()
    d.feed(JobOffered("j1"))
    d.advance(3.1)
    assert d.kills() == [(1, "heartbeat")]
    d.succeed(1, "j1")
    assert d.ended("j1").ok and d.core.state is S.RESTARTING
    d.exit(1, SIGKILL)
    assert len(d.of(EndJob)) == 1


# --- a worker out of step -------------------------------------------------------------


def test_a_worker_speaking_another_protocol_is_killed():
    d = Driver()
    d.feed(Start())
    d.spawned(1)
    d.message(1, Hello(protocol=PROTOCOL_VERSION + 1, worker_id="w1-test", pid=1001))
    assert d.kills() == [(1, "protocol")] and d.logs("worker_protocol_mismatch")


def test_an_undecodable_message_fails_the_job_with_backend_error_and_replaces_the_worker():
    d = Driver().start()
    d.feed(JobOffered("j1"))
    d.feed(Undecodable(1, "undecodable header"))
    assert d.kills() == [(1, "protocol")]
    d.exit(1, SIGKILL)
    result = d.ended("j1")
    assert result.error_code == "backend_error" and "could not be handled" in result.error_message
    assert d.spawns() == [1, 2] and d.core.restarts == 1


def test_nothing_from_an_old_generation_is_taken_for_the_new_ones():
    d = Driver().start()
    d.feed(JobOffered("j1"))
    d.exit(1, SIGSEGV)
    d.bring_up(2)
    d.feed(JobOffered("j2"))
    d.succeed(1, "j2")  # a late frame of the dead worker
    assert d.core.state is S.BUSY and [a.job_id for a in d.of(EndJob)] == ["j1"]
    assert d.logs("worker_message_dropped")
    d.succeed(2, "j2")
    assert d.ended("j2").ok


# --- a start that fails (without the worker's report: test_lifecycle.py) -------------


def test_a_start_that_fails_is_logged_with_the_workers_reason_and_retried_like_a_crash():
    d = Driver(max_backoff_s=5)
    d.feed(Start())
    d.spawned(1)
    d.startup_failed(1, "FileNotFoundError", "model file qwen.safetensors is missing")
    d.exit(1, 4)
    (failed,) = d.logs("worker_startup_failed")
    assert failed.fields["reason"] == "FileNotFoundError" and "qwen.safetensors" in failed.fields["error"]
    (exited,) = d.logs("worker_exited")
    assert exited.level == "warning" and exited.fields["startup_failure"] == "FileNotFoundError"
    assert "the backend could not load" in exited.fields["description"]
    assert restarts(d) == ["exit"] and d.spawns() == [1, 2]  # files may still be mounting
