"""The worker lifecycle core, driven through every transition on a fake clock: no process,
no socket, no waiting (tests/support/lifecycle_driver.py plays the shell). What each message
from a worker does: test_lifecycle_messages.py; recycling with overlap:
test_lifecycle_recycle.py."""

from __future__ import annotations

import signal
from typing import get_args

import pytest

from ipc.messages import PROTOCOL_VERSION, CancelJob, Hello, Shutdown
from supervisor.worker.lifecycle import events as lifecycle_events
from supervisor.worker.lifecycle.core import Lifecycle
from supervisor.jobs.job import JobResult
from supervisor.worker.lifecycle.events import (
    AbortAsked, CancelAsked, CountRestart, EndJob, GiveUp, JobOffered, Limits, Reconfigured, RecycleAsked,
    RefuseJob, ReportReady, ReportStage, Send, SendFailed, SendJob, SetTimer, SpawnFailed, Start,
    StopAsked, Timer, TimerFired, TimerKind, Undecodable,
)
from supervisor.worker.overlap import OverlapMode
from supervisor.worker.reasons import KillReason, RestartReason
from supervisor.worker.state import WorkerState as S
from tests.support.lifecycle_driver import READY, Driver

SIGKILL, SIGSEGV = -signal.SIGKILL, -signal.SIGSEGV


def restarts(d: Driver) -> list[str]:
    return [a.reason.value for a in d.of(CountRestart)]


# --- a normal life -------------------------------------------------------------------


def test_spawn_load_serve_a_job_and_stop():
    d = Driver(startup_timeout_s=30)
    d.feed(Start())
    assert d.spawns() == [1] and d.core.state is S.STOPPED  # no process yet
    d.spawned(1)
    assert d.core.state is S.STARTING and d.core.worker.pid == 1001
    assert d.due[Timer(TimerKind.STARTUP, 1)] == 30
    d.message(1, Hello(protocol=PROTOCOL_VERSION, worker_id="w1-test", pid=1001))
    d.advance(2)
    d.message(1, READY)
    assert d.core.state is S.READY and d.core.last_ready == READY
    assert Timer(TimerKind.STARTUP, 1) not in d.due and Timer(TimerKind.WATCHDOG, 1) in d.due
    assert d.of(ReportReady) and d.logs("worker_ready")[0].fields["startup_s"] == 2

    actions = d.feed(JobOffered("j1"))
    assert [type(a) for a in actions] == [SendJob, SetTimer]  # hand over, watch its prepare stage
    assert actions[0] == SendJob(1, "j1") and d.core.state is S.READY  # busy: once in the model
    d.prepared(1, "j1")
    assert d.of(ReportStage)[-1] == ReportStage("j1", "prepared", 1.0) and d.core.state is S.READY
    d.model_started(1, "j1")
    assert d.core.state is S.BUSY and d.of(ReportStage)[-1] == ReportStage("j1", "model_started")
    d.model_done(1, "j1", 7.5)
    assert d.of(ReportStage)[-1] == ReportStage("j1", "model_done", 7.5) and d.core.state is S.READY
    d.succeed(1, "j1")
    assert d.ended("j1").ok and d.ended("j1").image == b"png"
    assert d.core.state is S.READY

    d.feed(StopAsked(grace_s=5))
    assert d.of(Send)[-1] == Send(1, Shutdown()) and d.due[Timer(TimerKind.RETIRE, 1)] == d.now + 5
    d.exit(1, 0)
    assert d.core.state is S.STOPPED and d.core.finished and d.core.worker is None
    assert d.states() == ["starting", "ready", "busy", "ready", "stopped"]  # busy: the model stage
    assert d.logs("worker_exited")[0].level == "info" and restarts(d) == []
    assert d.due == {}  # nothing left ticking


def test_a_job_offered_to_a_worker_not_ready_is_refused_and_stays_the_callers():
    d = Driver()
    d.feed(Start())
    d.spawned(1)
    assert d.feed(JobOffered("early")) == [RefuseJob("early", "the worker is not ready")]
    assert d.core.state is S.STARTING


def test_cancel_goes_to_the_worker_holding_the_job_only():
    d = Driver().start()
    assert d.feed(CancelAsked("nobody")) == []
    d.run_job(1, "j1")
    assert d.of(Send, d.feed(CancelAsked("j1"))) == [Send(1, CancelJob(job_id="j1"))]


def test_every_event_has_a_rule():
    # (every message a worker can send: test_lifecycle_messages.py)
    for kind in get_args(lifecycle_events.Event):
        assert callable(getattr(Lifecycle, lifecycle_events.handler_name("on_", kind))), kind


# --- crashes, backoff, the crash-loop limit ------------------------------------------------


def test_a_crash_mid_job_fails_the_job_and_restarts_at_once_after_a_healthy_run():
    d = Driver(healthy_after_s=60, heartbeat_timeout_s=1000).start()
    d.advance(120)
    d.run_job(1, "j1")
    d.exit(1, SIGSEGV)
    result = d.ended("j1")
    assert result.error_code == "worker_crashed" and "SIGSEGV" in result.error_message
    assert restarts(d) == ["signal"] and d.core.restarts == 1
    assert d.spawns() == [1, 2]  # at once: no backoff timer
    assert d.core.state is S.RESTARTING
    (exited,) = d.logs("worker_exited")
    assert exited.level == "error" and exited.fields["reason"] == "signal" and "kill_reason" not in exited.fields


def test_a_sigkill_we_did_not_send_is_reported_as_a_possible_oom_kill():
    d = Driver().start()
    d.exit(1, SIGKILL)
    (exited,) = d.logs("worker_exited")
    assert exited.fields["reason"] == "oom_kill" and "out-of-memory" in exited.fields["description"]
    assert restarts(d) == ["oom_kill"]


def test_a_crash_storm_backs_off_doubling_to_the_cap_then_a_healthy_run_resets_it():
    d = Driver(max_backoff_s=5, healthy_after_s=60, max_restarts=100)
    d.feed(Start())
    delays = []
    for gen in range(1, 7):
        d.bring_up(gen, load_s=0.1)
        backoff = [a.delay_s for a in d.of(SetTimer, d.exit(gen, SIGSEGV)) if a.timer.kind is TimerKind.BACKOFF]
        delays.append(backoff[0] if backoff else 0.0)
        d.advance(delays[-1])
        assert d.spawns()[-1] == gen + 1
    assert delays == [0, 1, 2, 4, 5, 5]
    assert d.core.state is S.RESTARTING and d.core.restarts == 6
    d.bring_up(7)
    for _ in range(61):
        d.advance(1)
        d.heartbeat(7)  # healthy: the next crash restarts at once again
    d.exit(7, SIGSEGV)
    assert d.spawns()[-1] == 8 and Timer(TimerKind.BACKOFF) not in d.due


def test_more_than_max_restarts_within_the_window_gives_up():
    d = Driver(max_restarts=2, restart_window_s=600, max_backoff_s=1).start()
    d.exit(1, 1)
    d.advance(1)
    d.bring_up(2)
    d.exit(2, 1)
    d.advance(1)
    d.bring_up(3)
    d.run_job(1, "last")
    d.exit(3, 1)  # the third unplanned exit within 600 s: one too many
    assert d.core.state is S.FAILED and d.of(GiveUp)
    assert "worker.max_restarts is 2" in d.of(GiveUp)[0].why
    assert d.spawns() == [1, 2, 3] and d.due == {}  # no more tries
    assert d.ended("last").error_code == "worker_crashed"
    assert restarts(d) == ["exit", "exit"]  # the last exit restarted nothing
    d.feed(StopAsked(grace_s=5))
    assert d.core.finished and d.core.state is S.FAILED  # FAILED stays: it says why the node goes


def test_crashes_older_than_the_window_do_not_count():
    d = Driver(max_restarts=1, restart_window_s=10, max_backoff_s=1).start()
    d.exit(1, 1)
    d.bring_up(2)
    d.advance(11)
    d.exit(2, 1)  # the first crash is out of the window
    assert d.core.state is S.RESTARTING and not d.of(GiveUp)


def test_time_spent_loading_is_no_healthy_run_a_slow_start_that_fails_backs_off():
    # A model that fails after a long load (a warm-up out of memory, a mount that times out)
    # never served: each failure is one more in a row, however long the load took.
    d = Driver(max_backoff_s=60, healthy_after_s=60, max_restarts=100, heartbeat_timeout_s=1000)
    d.feed(Start())
    delays = []
    for gen in range(1, 5):
        d.load(gen)
        d.advance(90)  # loading, longer than healthy_after_s
        backoff = [a.delay_s for a in d.of(SetTimer, d.exit(gen, 4)) if a.timer.kind is TimerKind.BACKOFF]
        delays.append(backoff[0] if backoff else 0.0)
        d.advance(delays[-1])
    assert delays == [0, 1, 2, 4]
    assert d.logs("worker_restarting")[-1].fields["crashes_in_a_row"] == 4


def test_a_spawn_that_fails_is_a_crash_retried_after_the_backoff():
    d = Driver(max_backoff_s=5)
    d.feed(Start())
    d.feed(SpawnFailed(1, "FileNotFoundError: /nonexistent/python"))
    assert d.core.state is S.RESTARTING and restarts(d) == ["exit"] and d.spawns() == [1, 2]
    d.feed(SpawnFailed(2, "again"))
    assert d.spawns() == [1, 2] and d.due[Timer(TimerKind.BACKOFF)] == 1
    d.advance(1)
    assert d.spawns() == [1, 2, 3]


# --- the watchdog ------------------------------------------------------------------------


def test_a_job_over_its_time_is_killed_and_fails_with_inference_timeout():
    d = Driver(inference_timeout_s=10, heartbeat_timeout_s=3).start()
    d.run_job(1, "hang")
    for _ in range(10):
        d.advance(1)
        d.heartbeat(1)  # beating all along: only the job's time runs out
    assert d.kills() == []
    d.advance(1.5)
    assert d.kills() == [(1, "watchdog")] and d.core.state is S.RESTARTING
    d.exit(1, SIGKILL)
    result = d.ended("hang")
    assert result.error_code == "inference_timeout" and "inference_timeout_s" in result.error_message
    (exited,) = d.logs("worker_exited")
    assert exited.fields["reason"] == "watchdog" and "out-of-memory" not in exited.fields["description"]
    assert restarts(d) == ["watchdog"]


def test_a_silent_worker_is_killed_for_its_heartbeat_even_when_idle():
    d = Driver(heartbeat_timeout_s=3).start()
    d.advance(2.9)
    d.heartbeat(1)
    d.advance(2.9)
    assert d.kills() == []
    d.advance(0.2)
    assert d.kills() == [(1, "heartbeat")]
    d.exit(1, SIGKILL)
    assert restarts(d) == ["heartbeat"]


def test_a_worker_not_ready_within_the_startup_timeout_is_killed():
    d = Driver(startup_timeout_s=5)
    d.feed(Start())
    d.spawned(1)
    d.advance(4.9)
    assert d.kills() == []
    d.advance(0.2)
    assert d.kills() == [(1, "start_timeout")] and d.logs("worker_startup_timeout")
    d.message(1, READY)  # ready too late: it is being killed
    assert d.core.state is S.RESTARTING and not d.of(ReportReady)
    d.exit(1, SIGKILL)
    assert d.logs("worker_exited")[0].fields["reason"] == "watchdog"  # the contract's restart label
    assert d.spawns() == [1, 2]


def test_heartbeats_are_not_judged_while_the_model_loads():
    d = Driver(heartbeat_timeout_s=1, startup_timeout_s=600)
    d.feed(Start())
    d.spawned(1)
    d.advance(300)
    assert d.kills() == []


def test_a_reload_with_a_shorter_timeout_applies_to_the_running_job():
    d = Driver(inference_timeout_s=600, heartbeat_timeout_s=30).start()
    d.run_job(1, "j1")
    d.advance(5)
    d.heartbeat(1)
    d.feed(Reconfigured(Limits(inference_timeout_s=4, heartbeat_timeout_s=30)))
    d.advance(0.1)
    assert d.kills() == [(1, "watchdog")]


def test_a_new_heartbeat_interval_keeps_the_old_timeout_until_the_next_worker():
    d = Driver(heartbeat_interval_s=1, heartbeat_timeout_s=30).start()
    d.feed(Reconfigured(Limits(heartbeat_interval_s=10, heartbeat_timeout_s=2)))
    d.advance(5)
    assert d.kills() == []  # the running worker still beats every second: 30 s applies
    d.advance(26)
    assert d.kills() == [(1, "heartbeat")]


# --- recycling, plain (worker.overlap: never; with overlap: test_lifecycle_recycle.py) ------

NEVER = OverlapMode.NEVER


def test_a_recycle_of_an_idle_worker_asks_it_to_exit_and_restarts_at_once_uncounted():
    d = Driver(max_restarts=0, overlap=NEVER).start()  # a single counted restart would give up
    d.feed(RecycleAsked("SIGUSR1"))
    assert d.core.state is S.RESTARTING and d.of(Send)[-1] == Send(1, Shutdown())
    d.exit(1, 0)  # it exited by itself
    (exited,) = d.logs("worker_exited")
    assert exited.level == "info" and exited.fields["reason"] == "recycle" and exited.fields["kill_reason"] == "recycle"
    assert restarts(d) == ["recycle"] and d.core.restarts == 0  # counted by label, not as a restart
    assert d.logs("worker_restarting")[0].level == "info"
    assert d.spawns() == [1, 2] and not d.of(GiveUp)
    d.bring_up(2)
    assert d.core.state is S.READY


def test_a_recycle_waits_for_the_running_job():
    d = Driver(overlap=NEVER).start()
    d.run_job(1, "j1")
    d.feed(RecycleAsked("config reloaded"))
    assert d.core.state is S.BUSY and not d.of(Send)
    d.succeed(1, "j1")
    assert d.ended("j1").ok and d.of(Send)[-1] == Send(1, Shutdown())
    assert d.states()[-1] == "restarting"  # straight on: no job goes to it meanwhile
    assert d.feed(JobOffered("j2")) == [RefuseJob("j2", "the worker is not ready")]


def test_a_recycled_worker_that_does_not_exit_is_killed_after_the_grace():
    d = Driver(stop_grace_s=5, overlap=NEVER).start()
    d.feed(RecycleAsked("SIGUSR1"))
    d.advance(5.1)
    assert d.kills() == [(1, "recycle")] and d.logs("worker_stop_timeout")
    d.exit(1, SIGKILL)
    assert "out-of-memory" not in d.logs("worker_exited")[0].fields["description"]
    assert restarts(d) == ["recycle"]


def test_a_recycle_while_loading_kills_the_loading_worker():
    d = Driver()
    d.feed(Start())
    d.spawned(1)
    d.feed(RecycleAsked("SIGUSR1"))
    assert d.kills() == [(1, "recycle")]


def test_a_recycle_asked_while_the_process_is_spawned_replaces_it_once_it_runs():
    d = Driver()
    d.feed(Start())
    d.feed(RecycleAsked("config reloaded"))  # the spawn already read the settings before
    assert d.kills() == []
    d.spawned(1)
    assert d.kills() == [(1, "recycle")]
    d.exit(1, SIGKILL)
    assert d.spawns() == [1, 2] and d.core.recycle_pending is None


def test_a_recycle_between_workers_is_served_by_the_next_spawn():
    d = Driver(max_backoff_s=5).start()
    d.exit(1, 1)
    d.bring_up(2)
    d.exit(2, 1)  # backing off 1 s
    d.feed(RecycleAsked("SIGUSR1"))
    d.advance(1)
    d.bring_up(3)
    assert d.core.state is S.READY and d.kills() == []


# --- ending on purpose: drains, QUIT, stop -------------------------------------------------


def test_a_drain_deadline_kills_with_its_reason_and_the_job_ends_with_the_nodes_result():
    d = Driver().start()
    d.run_job(1, "j1")
    d.feed(StopAsked())  # no restart from now on
    shutdown = JobResult.failure("shutdown", "the node stopped before the job could finish")
    d.feed(AbortAsked(shutdown, "the node is stopping", KillReason.DRAIN_DEADLINE))
    assert d.kills() == [(1, "drain_deadline")]
    assert d.core.state is S.BUSY  # stopping: no restarting state, the exit ends it
    d.exit(1, SIGKILL)
    assert d.ended("j1") == shutdown
    (exited,) = d.logs("worker_exited")
    assert exited.level == "warning" and exited.fields["kill_reason"] == "drain_deadline"
    assert exited.fields["reason"] == "drain_deadline" and "out-of-memory" not in exited.fields["description"]
    assert restarts(d) == [] and d.spawns() == [1]
    assert d.core.state is S.STOPPED and d.core.finished


def test_quit_kills_now_and_a_stop_without_grace_too():
    d = Driver().start()
    d.run_job(1, "j1")
    d.feed(StopAsked())
    d.feed(AbortAsked(JobResult.failure("shutdown", "SIGQUIT"), "quit", KillReason.QUIT))
    d.feed(StopAsked(grace_s=0))
    assert d.kills() == [(1, "quit"), (1, "quit")]  # the first reason stays
    d.exit(1, SIGKILL)
    assert d.logs("worker_exited")[0].level == "info" and d.core.finished


def test_a_stop_kills_a_busy_worker_and_waits_for_the_exit():
    d = Driver().start()
    d.run_job(1, "j1")
    d.feed(StopAsked(grace_s=5))
    assert d.kills() == [(1, "stop")] and not d.core.finished
    d.exit(1, SIGKILL)
    assert d.core.finished and d.ended("j1").error_code == "worker_crashed"


def test_stopping_during_a_backoff_spawns_nothing_more():
    d = Driver(max_backoff_s=5).start()
    d.exit(1, 1)
    d.bring_up(2)
    d.exit(2, 1)
    assert Timer(TimerKind.BACKOFF) in d.due
    d.feed(StopAsked())
    assert d.due == {} and d.core.state is S.STOPPED and d.core.finished
    d.advance(10)
    assert d.spawns() == [1, 2]


def test_a_stop_while_the_process_is_spawned_kills_it_once_it_exists():
    d = Driver()
    d.feed(Start())
    d.feed(StopAsked(grace_s=5))
    assert not d.core.finished and d.kills() == []
    d.spawned(1)
    assert d.kills() == [(1, "stop")]
    d.exit(1, SIGKILL)
    assert d.core.finished and d.core.state is S.STOPPED


def test_a_worker_that_exits_by_itself_while_the_node_stops_is_no_error():
    d = Driver().start()
    d.feed(StopAsked())
    d.exit(1, 5)
    assert d.logs("worker_exited")[0].level == "info" and d.core.finished and restarts(d) == []


# --- a worker out of reach (a worker out of step: test_lifecycle_messages.py) ------------


def test_a_job_that_cannot_reach_the_worker_goes_back_to_the_caller():
    d = Driver().start()
    d.run_job(1, "j1")
    actions = d.feed(SendFailed(1, "j1", "Host unreachable"))
    assert RefuseJob("j1", "the worker could not be reached") in actions
    assert d.kills() == [(1, "protocol")]
    d.exit(1, SIGKILL)
    assert not d.of(EndJob)  # never handed over: nothing to end


# --- a start that fails (with the worker's own report: test_lifecycle_messages.py) --------


def test_a_start_that_fails_without_its_report_is_still_told_from_the_exit_status():
    d = Driver()
    d.feed(Start())
    d.spawned(1)
    d.exit(1, 4)
    (failed,) = d.logs("worker_startup_failed")
    assert failed.fields["reason"] == "exit status 4" and "could not load" in failed.fields["error"]


def _watchdog(d):
    d.run_job(1, "j")
    d.advance(11)


def _heartbeat(d):
    d.advance(31)


def _drain(d):
    d.run_job(1, "j")
    d.feed(StopAsked())
    d.feed(AbortAsked(JobResult.failure("shutdown", "drain"), "the node is stopping", KillReason.DRAIN_DEADLINE))


def _quit(d):
    d.feed(StopAsked())
    d.feed(AbortAsked(JobResult.failure("shutdown", "quit"), "the node is stopping", KillReason.QUIT))


HOW = {
    KillReason.WATCHDOG: _watchdog,
    KillReason.HEARTBEAT: _heartbeat,
    KillReason.PROTOCOL: lambda d: d.feed(Undecodable(1, "garbage")),
    KillReason.RECYCLE: lambda d: (d.feed(RecycleAsked("SIGUSR1")), d.advance(6)),
    KillReason.DRAIN_DEADLINE: _drain,
    KillReason.QUIT: _quit,
    KillReason.STOP: lambda d: (d.run_job(1, "j"), d.feed(StopAsked(grace_s=5))),
}


@pytest.mark.parametrize("reason", [r for r in KillReason if r is not KillReason.START_TIMEOUT])
def test_every_kill_is_logged_with_its_reason_never_as_a_possible_oom(reason):
    d = Driver(inference_timeout_s=10, heartbeat_timeout_s=30, overlap=OverlapMode.NEVER).start()
    HOW[reason](d)
    assert d.kills()[0] == (1, reason.value)
    d.exit(1, SIGKILL)
    exited = d.logs("worker_exited")[-1]
    assert exited.fields["kill_reason"] == reason.value and "out-of-memory" not in exited.fields["description"]
    assert exited.fields["reason"] != "oom_kill"
    # (START_TIMEOUT: test_a_worker_not_ready_within_the_startup_timeout_is_killed)


def test_the_restart_labels_are_the_contracts():
    assert [r.value for r in RestartReason] == ["exit", "signal", "oom_kill", "watchdog", "heartbeat", "recycle"]


def test_a_start_refused_for_good_gives_up_at_once_without_a_restart():
    # The worker's UNRUNNABLE exit (a checkpoint this engine would run degraded): a restart
    # would refuse again, so the node fails at once instead of crash-looping to max_restarts.
    from ipc.exit_codes import WorkerExit

    d = Driver(max_restarts=10, max_backoff_s=1)
    d.feed(Start())
    d.load(1)
    d.startup_failed(1, "Unrunnable", "qwen_image_edit_2511_bf16.safetensors is a Qwen-Image-Edit-2511 checkpoint ...")
    d.exit(1, WorkerExit.UNRUNNABLE)
    assert d.core.state is S.FAILED and d.spawns() == [1] and d.due == {}
    (give_up,) = d.of(GiveUp)
    assert "a restart would not mend it" in give_up.why and "Qwen-Image-Edit-2511" in give_up.why
    assert restarts(d) == [] and d.core.restarts == 0
    (exited,) = d.logs("worker_exited")
    assert "not retried" in exited.fields["description"]


def test_the_same_status_after_a_worker_served_is_a_crash_like_any_other():
    # Only a start can be refused for good; a worker that served and then exits so is
    # restarted as before (the status says nothing permanent about a running worker).
    from ipc.exit_codes import WorkerExit

    d = Driver(max_restarts=10, max_backoff_s=1).start()
    d.exit(1, WorkerExit.UNRUNNABLE)
    assert d.core.state is S.RESTARTING and not d.of(GiveUp)


def test_a_late_watchdog_timer_is_our_loop_held_up_and_judges_once_the_messages_are_read():
    # The event loop stalled 10 s (a slow request on it): the worker's heartbeats of that time
    # wait unread in the socket. The timer that fires late does not take that for silence.
    d = Driver(heartbeat_timeout_s=3).start()
    d.heartbeat(1)
    (timer,) = [t for t in d.due if t.kind is TimerKind.WATCHDOG]
    d.now = d.due.pop(timer) + 10.0  # fired 10 s after it was due
    d.feed(TimerFired(timer))
    assert d.kills() == [] and d.logs("supervisor_loop_late")[0].fields["late_s"] == 10.0
    d.heartbeat(1)  # the reader gets to the socket: the beats were there all along
    d.advance(0.3)
    assert d.kills() == []
    d.advance(3.1)  # and silence after that is silence
    assert d.kills() == [(1, "heartbeat")]
