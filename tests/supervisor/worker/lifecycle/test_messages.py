"""What a worker's messages do in the lifecycle core (supervisor/worker/lifecycle/messages.py), on a
fake clock: results and progress for the job the sending generation holds and nothing else,
a worker out of step (another protocol, an unreadable message, a late frame of a dead
generation), a start that fails with the worker's own reason."""

from __future__ import annotations

import signal
from typing import get_args

from ipc.messages import PROTOCOL_VERSION, CancelJob, Hello, JobProgress, Shutdown, WorkerMessage
from supervisor.worker.lifecycle import events as lifecycle_events
from supervisor.worker.lifecycle.core import Lifecycle
from supervisor.worker.lifecycle.events import (
    CancelAsked, CountRestart, EndJob, JobOffered, RecycleAsked, RefuseJob, ReportProgress, ReportStage, Send, SendJob,
    Start, Undecodable,
)
from supervisor.worker.overlap import OverlapMode
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
    d.run_job(d.core.current, "mine")
    d.succeed(1, "someone-else")
    assert d.logs("worker_result_unexpected") and d.core.state is S.BUSY and not d.of(EndJob)
    d.succeed(1, "mine")
    assert d.ended("mine").ok and d.core.state is S.READY


def test_a_job_failure_from_the_worker_keeps_the_worker():
    d = Driver().start()
    d.run_job(d.core.current, "oom")
    d.fail(1, "oom", "out_of_memory")
    assert d.ended("oom").error_code == "out_of_memory" and d.core.state is S.READY and d.kills() == []


def test_progress_goes_to_the_job_its_worker_holds_and_nowhere_else():
    d = Driver().start()
    d.run_job(d.core.current, "j1")
    assert d.message(1, JobProgress(job_id="j1", step=2, total=8)) == [ReportProgress("j1", 2, 8)]
    assert d.message(1, JobProgress(job_id="j0", step=8, total=8)) == []  # a job it no longer holds
    d.advance(1)
    assert d.of(ReportProgress, d.heartbeat(1)) == [] and d.core.state is S.BUSY
    d.succeed(1, "j1")
    assert d.message(1, JobProgress(job_id="j1", step=8, total=8)) == []  # crossed its result
    # A worker that died: its late report is dropped, the next worker's job is not touched.
    d.run_job(d.core.current, "j2")
    d.exit(1, SIGSEGV)
    d.bring_up(2)
    d.run_job(d.core.current, "j3")
    assert d.of(ReportProgress, d.message(1, JobProgress(job_id="j3", step=1, total=4))) == []
    assert d.message(2, JobProgress(job_id="j3", step=1, total=4)) == [ReportProgress("j3", 1, 4)]


def test_a_result_that_races_its_kill_still_ends_the_job_with_it():
    d = Driver(heartbeat_timeout_s=3).start()
    d.run_job(d.core.current, "j1")
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
    d.run_job(d.core.current, "j1")
    d.feed(Undecodable(1, "undecodable header"))
    assert d.kills() == [(1, "protocol")]
    d.exit(1, SIGKILL)
    result = d.ended("j1")
    assert result.error_code == "backend_error" and "could not be handled" in result.error_message
    assert d.spawns() == [1, 2] and d.core.restarts == 1


def test_nothing_from_an_old_generation_is_taken_for_the_new_ones():
    d = Driver().start()
    d.run_job(d.core.current, "j1")
    d.exit(1, SIGSEGV)
    d.bring_up(2)
    d.run_job(d.core.current, "j2")
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


# --- a job's stages: several jobs in one worker, the slot held by the model stage ------------


def test_one_job_at_a_time_before_the_model_and_the_next_while_the_first_is_in_it():
    d = Driver().start()
    assert d.core.accepting
    d.feed(JobOffered("a"))
    assert not d.core.accepting  # "a" is being prepared: one job before the model at a time
    assert d.feed(JobOffered("b")) == [RefuseJob("b", "the worker is preparing another job")]
    d.prepared(1, "a")
    assert not d.core.accepting and d.core.state is S.READY  # prepared, waiting: still before the model
    d.model_started(1, "a")
    assert d.core.accepting and d.core.state is S.BUSY
    assert d.of(SendJob, d.feed(JobOffered("b"))) == [SendJob(1, "b")]  # prepared while "a" is in the model
    d.model_done(1, "a")
    assert d.core.state is S.READY  # the GPU is free while "a" finishes and "b" waits prepared
    d.model_started(1, "b")
    d.succeed(1, "a")
    assert d.ended("a").ok and d.core.state is S.BUSY  # "b" is in the model
    assert [s.stage for s in d.of(ReportStage)] == ["prepared", "model_started", "model_done", "model_started"]
    assert {j.job_id: j.stage.value for j in d.core.worker.jobs.values()} == {"b": "model"}


def test_a_stage_message_for_a_job_not_there_is_logged_and_ignored():
    d = Driver().start()
    d.run_job(1, "a")
    d.model_started(1, "a")  # twice: out of step
    d.model_done(1, "nobody")
    assert [log.fields["job_id"] for log in d.logs("worker_stage_unexpected")] == ["a", "nobody"]
    assert d.core.state is S.BUSY and [s.stage for s in d.of(ReportStage)] == ["model_started"]


def test_a_crash_with_jobs_in_three_stages_ends_each_once_in_order():
    d = Driver().start()
    d.run_job(1, "finishing")
    d.model_done(1, "finishing")
    d.run_job(1, "modelling")
    d.feed(JobOffered("preparing"))
    d.exit(1, SIGSEGV)
    ends = [(e.job_id, e.result.error_code) for e in d.of(EndJob)]
    assert ends == [("finishing", "worker_crashed"), ("modelling", "worker_crashed"), ("preparing", "worker_crashed")]
    d.succeed(1, "finishing")  # a late frame of the dead generation: nothing more
    assert len(d.of(EndJob)) == 3


def test_the_model_stage_has_its_timeout_from_its_start_and_the_others_the_stage_timeout():
    d = Driver(inference_timeout_s=10, stage_timeout_s=4, heartbeat_timeout_s=3).start()
    d.feed(JobOffered("a"))
    d.prepared(1, "a")
    for _ in range(3):  # prepared and waiting: within the stage timeout, none of the model's time
        d.advance(1)
        d.heartbeat(1)
    d.model_started(1, "a")
    d.feed(JobOffered("b"))
    for _ in range(3):
        d.advance(1)
        d.heartbeat(1)
    assert d.kills() == []  # "a": 3 s of its 10 in the model (the 3 s prepared did not count)
    for _ in range(6):
        d.advance(1)
        d.heartbeat(1)
    # "a": 9 s of its 10 in the model; but "b" has been in prepare for 9 s, past its 4.
    assert d.kills() == [(1, "watchdog")] and d.logs("worker_watchdog")[0].fields["job_id"] == "b"


def test_a_stage_over_its_time_fails_that_job_and_the_others_crash():
    d = Driver(inference_timeout_s=10, stage_timeout_s=4, heartbeat_timeout_s=30).start()
    d.run_job(1, "a")
    d.model_done(1, "a")  # finishing, and stuck there
    d.run_job(1, "b")  # in the model
    d.advance(4.1)
    assert d.kills() == [(1, "watchdog")]
    (log,) = d.logs("worker_watchdog")
    assert log.fields["job_id"] == "a" and "finish stage" in log.fields["why"]
    d.exit(1, SIGKILL)
    assert d.ended("a").error_code == "inference_timeout" and "worker.stage_timeout_s" in d.ended("a").error_message
    assert d.ended("b").error_code == "worker_crashed"


def test_a_silent_worker_fails_its_model_stage_job_for_the_timeout_and_the_others_crash():
    d = Driver(heartbeat_timeout_s=3).start()
    d.run_job(1, "a")
    d.model_done(1, "a")
    d.run_job(1, "b")
    d.advance(3.1)
    d.exit(1, SIGKILL)
    assert d.ended("b").error_code == "inference_timeout" and d.ended("a").error_code == "worker_crashed"


def test_cancel_reaches_a_job_until_its_model_stage_ends():
    d = Driver().start()
    d.feed(JobOffered("a"))
    assert d.of(Send, d.feed(CancelAsked("a"))) == [Send(1, CancelJob(job_id="a"))]  # in prepare
    d.model_started(1, "a")
    assert d.of(Send, d.feed(CancelAsked("a"))) == [Send(1, CancelJob(job_id="a"))]  # in the model
    d.model_done(1, "a")
    assert d.feed(CancelAsked("a")) == []  # finishing: too late, the caller answers not_cancellable


def test_a_plain_recycle_takes_no_new_job_and_waits_for_the_finishing_one():
    d = Driver(overlap=OverlapMode.NEVER).start()
    d.run_job(1, "a")
    d.model_done(1, "a")
    d.feed(RecycleAsked("SIGUSR1"))
    assert not d.core.accepting and not d.of(Send)
    assert d.feed(JobOffered("b")) == [RefuseJob("b", "the worker is being recycled")]
    d.succeed(1, "a")
    assert d.of(Send)[-1] == Send(1, Shutdown())


def test_a_recycle_with_overlap_switches_as_the_model_stage_empties_and_the_old_worker_finishes():
    d = Driver(overlap=OverlapMode.ALWAYS, stop_grace_s=5).start()
    d.run_job(1, "a")
    d.feed(RecycleAsked("SIGUSR1"))
    d.bring_up(2)
    assert d.core.current == 1  # "a" is in the model: no switch yet
    d.model_done(1, "a")
    assert d.core.current == 2 and d.logs("worker_switched")  # at once: "a" finishes on the old one
    assert not d.of(Send) and d.core.accepting  # the old one is not asked to exit yet
    assert d.of(SendJob, d.run_job(2, "b")) == [SendJob(2, "b")]  # the new one takes the next job
    d.advance(30)
    d.heartbeat(1)
    d.heartbeat(2)
    d.succeed(1, "a")
    assert d.ended("a").ok and d.of(Send)[-1] == Send(1, Shutdown()) and d.kills() == []
    d.exit(1, 0)
    assert d.spawns() == [1, 2] and d.core.state is S.BUSY  # "b" in the new one's model
