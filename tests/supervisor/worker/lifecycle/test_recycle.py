"""Recycling with overlap (supervisor/worker/lifecycle/recycle.py): the next worker loads beside the
current one, which serves on. Every interleaving on a fake clock: the next one failing in
each way, the current one dying meanwhile, a second recycle, a drain or a QUIT, a reload.
(Plain recycles, worker.overlap never: test_lifecycle.py.)"""

from __future__ import annotations

import signal

from ipc.messages import Ready, Shutdown
from supervisor.jobs.job import JobResult
from supervisor.worker.lifecycle.events import (
    AbortAsked, CountOverlap, CountRestart, EndJob, JobOffered, Limits, MeasureMemory, Reconfigured, RecycleAsked,
    RefuseJob, ReportReady, Send, SendJob, SpawnFailed, Start, StopAsked, Timer, TimerKind,
)
from supervisor.worker.overlap import GiB, OverlapMode
from supervisor.worker.reasons import KillReason
from supervisor.worker.state import WorkerState as S
from tests.support.lifecycle_driver import Driver

SIGKILL, SIGSEGV = -signal.SIGKILL, -signal.SIGSEGV
ALWAYS, AUTO, NEVER = OverlapMode.ALWAYS, OverlapMode.AUTO, OverlapMode.NEVER
NEW = Ready(backend="reference", model_version="reference-2", device="cpu", load_time_s=0.5)


def overlaps(d: Driver) -> list[str]:
    return [a.result.value for a in d.of(CountOverlap)]


def restarts(d: Driver) -> list[str]:
    return [a.reason.value for a in d.of(CountRestart)]


def jobs_sent(d: Driver) -> list[tuple[int, str]]:
    return [(a.gen, a.job_id) for a in d.of(SendJob)]


def recycling(mode: OverlapMode = ALWAYS, **limits) -> Driver:
    """A node serving on generation 1, and a recycle asked (with `always`: generation 2 asked for)."""
    d = Driver(overlap=mode, **limits).start()
    d.feed(RecycleAsked("SIGUSR1"))
    return d


# --- the way it should go ----------------------------------------------------------------


def test_the_next_worker_loads_while_the_current_one_serves_then_takes_over_when_idle():
    d = recycling(stop_grace_s=5)
    assert d.spawns() == [1, 2] and d.core.current == 1 and d.core.next == 2
    assert d.logs("worker_overlap_started")[0].fields == {"why": "SIGUSR1", "generation": 2, "current_pid": 1001}
    d.load(2)  # its states are not the node's
    assert d.core.state is S.READY and d.states() == ["starting", "ready"]
    d.run_job(1, "during")  # the current one goes on taking jobs
    d.succeed(1, "during")
    assert jobs_sent(d) == [(1, "during")] and d.ended("during").ok

    d.advance(2)
    d.message(2, NEW)
    assert d.core.current == 2 and d.core.next is None and d.core.last_ready == NEW
    assert d.of(Send)[-1] == Send(1, Shutdown()) and d.due[Timer(TimerKind.RETIRE, 1)] == d.now + 5
    assert d.of(ReportReady)[-1] == ReportReady(2, NEW)
    assert overlaps(d) == ["switched"] and restarts(d) == ["recycle"] and d.core.restarts == 0
    (switched,) = d.logs("worker_switched")
    assert switched.fields["previous_pid"] == 1001 and switched.fields["pid"] == 1002
    assert switched.fields["model_version"] == "reference-2" and switched.fields["since_asked_s"] == 2
    assert d.states() == ["starting", "ready", "busy", "ready"]  # never restarting, never starting

    d.run_job(d.core.current, "after")
    assert jobs_sent(d)[-1] == (2, "after")
    d.exit(1, 0)  # the old one exits by itself: routine, nothing restarted
    assert d.logs("worker_exited")[0].fields["kill_reason"] == "recycle" and d.spawns() == [1, 2]
    assert d.core.state is S.BUSY and Timer(TimerKind.RETIRE, 1) not in d.due


def test_the_switch_waits_for_the_running_job_and_happens_as_it_ends():
    d = Driver(overlap=ALWAYS).start()
    d.run_job(d.core.current, "long")
    d.feed(RecycleAsked("config reloaded"))
    assert d.spawns() == [1, 2]  # at once: the job need not end first
    d.bring_up(2, ready=NEW)
    assert d.core.current == 1 and d.core.state is S.BUSY and not d.logs("worker_switched")
    # The next one is ready: nothing new enters the current one, whose model stage is busy.
    assert d.feed(JobOffered("waits")) == [RefuseJob("waits", "the worker is being replaced")]
    d.succeed(1, "long")
    assert d.ended("long").ok and d.core.current == 2 and d.logs("worker_switched")
    assert d.states()[-1] == "ready"  # busy -> ready, then the next one serves
    d.run_job(d.core.current, "waits")
    assert jobs_sent(d) == [(1, "long"), (2, "waits")]


def test_nothing_from_the_old_worker_is_taken_for_the_new_ones():
    d = recycling()
    d.bring_up(2, ready=NEW)
    d.run_job(d.core.current, "j")
    d.succeed(1, "j")  # the old worker, asked to exit, answers a job it never had
    assert d.core.state is S.BUSY and not d.of(EndJob) and d.logs("worker_result_unexpected")
    d.succeed(2, "j")
    assert d.ended("j").ok and d.core.state is S.READY


def test_auto_measures_first_and_overlaps_when_two_fit():
    d = recycling(AUTO, overlap_margin_bytes=2 * GiB)
    assert d.of(MeasureMemory) == [MeasureMemory(1, 1001, "cpu")] and d.spawns() == [1]
    d.feed(JobOffered("meanwhile"))  # still serving while measured
    d.measured(1, footprint=30 * GiB, free=40 * GiB)
    assert d.spawns() == [1, 2] and d.core.next == 2 and overlaps(d) == []
    (decision,) = d.logs("worker_overlap_decision")
    assert decision.fields["overlap"] is True and decision.fields["margin_bytes"] == 2 * GiB
    assert decision.fields["footprint_bytes"] == 30 * GiB and decision.fields["free_bytes"] == 40 * GiB
    assert "40.00 GiB" in decision.fields["why"] and "32.00 GiB" in decision.fields["why"]


def test_auto_falls_back_to_a_plain_recycle_when_memory_is_short():
    d = recycling(AUTO, overlap_margin_bytes=2 * GiB)
    d.run_job(d.core.current, "j1")
    d.measured(1, footprint=30 * GiB, free=31 * GiB)
    assert d.logs("worker_overlap_decision")[0].fields["overlap"] is False
    assert overlaps(d) == ["fell_back"] and d.spawns() == [1] and d.core.state is S.BUSY
    d.succeed(1, "j1")  # as before: after the job, out of service until the new one is ready
    assert d.core.state is S.RESTARTING and d.of(Send)[-1] == Send(1, Shutdown())
    d.exit(1, 0)
    assert d.spawns() == [1, 2] and d.core.current == 2
    d.bring_up(2)
    assert overlaps(d) == ["fell_back"]  # no switch counted: it was no overlap


def test_auto_without_figures_falls_back():
    d = recycling(AUTO)
    d.measured(1, None, None, error="NVML: NVMLError_LibraryNotFound")
    assert overlaps(d) == ["fell_back"] and "NVML" in d.logs("worker_overlap_decision")[0].fields["why"]
    assert d.core.state is S.RESTARTING


def test_never_recycles_as_before():
    d = recycling(NEVER)
    assert d.core.state is S.RESTARTING and not d.of(MeasureMemory) and overlaps(d) == []


def test_a_recycle_of_a_worker_still_loading_replaces_it_as_before():
    d = Driver(overlap=ALWAYS)
    d.feed(Start())
    d.spawned(1)
    d.feed(RecycleAsked("SIGUSR1"))  # not serving yet: nothing to keep in service
    assert d.kills() == [(1, "recycle")] and d.core.next is None


# --- the next worker fails -----------------------------------------------------------------


def test_a_next_worker_that_cannot_load_leaves_the_current_one_serving():
    d = recycling(max_restarts=0)  # a single counted restart would give up
    d.load(2)
    d.startup_failed(2, "FileNotFoundError", "model file new.safetensors is missing")
    d.exit(2, 4)
    (failed,) = d.logs("worker_recycle_failed")
    assert failed.level == "error" and failed.fields["current_pid"] == 1001 and failed.fields["generation"] == 2
    assert "new.safetensors" in failed.fields["error"]
    assert overlaps(d) == ["failed"] and restarts(d) == [] and d.core.restarts == 0
    assert d.core.state is S.READY and d.core.current == 1 and d.core.next is None and d.spawns() == [1, 2]
    d.run_job(d.core.current, "j")
    assert jobs_sent(d) == [(1, "j")]
    d.feed(RecycleAsked("SIGUSR1"))  # the next ask tries again
    assert d.spawns() == [1, 2, 3]


def test_a_next_worker_that_cannot_be_spawned_is_a_failed_recycle():
    d = recycling()
    d.feed(SpawnFailed(2, "OSError: fork failed"))
    assert overlaps(d) == ["failed"] and "fork" in d.logs("worker_recycle_failed")[0].fields["error"]
    assert d.core.state is S.READY and d.due.get(Timer(TimerKind.BACKOFF)) is None


def test_a_next_worker_not_ready_in_its_startup_time_is_killed_and_the_recycle_fails():
    d = recycling(startup_timeout_s=10, heartbeat_timeout_s=3)
    d.load(2)
    for _ in range(10):  # the current one stays healthy meanwhile
        d.advance(1)
        d.heartbeat(1)
    d.advance(0.1)
    assert d.kills() == [(2, "start_timeout")] and d.core.state is S.READY
    d.exit(2, SIGKILL)
    assert overlaps(d) == ["failed"] and d.core.current == 1 and restarts(d) == []


def test_a_ready_next_worker_that_falls_silent_while_it_waits_is_killed():
    d = recycling(heartbeat_timeout_s=3, inference_timeout_s=600)
    d.run_job(d.core.current, "long")
    d.bring_up(2, ready=NEW)
    for _ in range(3):
        d.advance(1)
        d.heartbeat(1)  # only the current one beats
    d.advance(0.2)
    assert d.kills() == [(2, "heartbeat")] and d.core.state is S.BUSY
    d.exit(2, SIGKILL)
    d.succeed(1, "long")
    assert overlaps(d) == ["failed"] and d.core.current == 1 and d.core.state is S.READY


# --- the current worker fails meanwhile --------------------------------------------------------


def test_a_current_worker_killed_by_the_watchdog_mid_overlap_hands_over_to_the_loading_next():
    d = recycling(inference_timeout_s=10, heartbeat_timeout_s=1000)
    d.run_job(d.core.current, "hang")
    d.load(2)
    d.advance(10.1)
    assert d.kills() == [(1, "watchdog")] and d.core.state is S.RESTARTING
    d.exit(1, SIGKILL)
    assert d.ended("hang").error_code == "inference_timeout"
    assert d.core.current == 2 and d.core.next is None and d.core.state is S.STARTING
    assert d.spawns() == [1, 2] and restarts(d) == ["watchdog"] and d.core.restarts == 1
    assert d.logs("worker_restarting")[0].fields["next_generation"] == 2 and d.logs("worker_next_takes_over")
    d.message(2, NEW)
    assert d.core.state is S.READY and d.core.last_ready == NEW and overlaps(d) == ["switched"]


def test_a_current_worker_crashing_while_the_next_waits_ready_hands_over_at_once():
    d = recycling()
    d.run_job(d.core.current, "j")
    d.bring_up(2, ready=NEW)
    d.exit(1, SIGSEGV)
    assert d.ended("j").error_code == "worker_crashed"
    assert d.core.current == 2 and d.core.state is S.READY and d.of(ReportReady)[-1] == ReportReady(2, NEW)
    assert d.states()[-3:] == ["restarting", "starting", "ready"] and d.spawns() == [1, 2]


def test_a_current_worker_crashing_while_the_next_is_being_spawned_hands_over_once_it_runs():
    d = recycling()
    d.exit(1, SIGSEGV)
    assert d.core.current == 2 and d.core.state is S.RESTARTING
    d.bring_up(2, ready=NEW)
    assert d.core.state is S.READY and d.spawns() == [1, 2]


def test_a_crash_loop_during_an_overlap_gives_up_and_ends_the_next_worker_too():
    d = recycling(max_restarts=0)
    d.load(2)
    d.exit(1, SIGSEGV)
    assert d.core.state is S.FAILED and (2, "stop") in d.kills()
    d.exit(2, SIGKILL)
    assert overlaps(d) == [] and not d.logs("worker_recycle_failed")


def test_a_memory_figure_for_a_worker_gone_meanwhile_is_ignored():
    d = recycling(AUTO)
    d.exit(1, SIGSEGV)  # the restart reads the settings in force: the recycle is served
    d.measured(1, footprint=1, free=100 * GiB)
    assert d.spawns() == [1, 2] and d.core.current == 2 and d.core.next is None
    assert not d.logs("worker_overlap_decision")


# --- another recycle, a reload -----------------------------------------------------------------


def test_a_second_recycle_ends_the_loading_next_worker_and_starts_a_fresh_one_once_it_is_gone():
    d = recycling()
    d.load(2)
    d.feed(RecycleAsked("config reloaded"))  # worker 2 loads the settings from before
    assert d.kills() == [(2, "recycle")] and d.logs("worker_recycle_superseded")
    assert d.spawns() == [1, 2]  # not beside it: once it is gone
    d.exit(2, SIGKILL)
    assert d.spawns() == [1, 2, 3] and d.core.next == 3 and overlaps(d) == []
    d.bring_up(3, ready=NEW)
    assert d.core.current == 3 and overlaps(d) == ["switched"]


def test_a_second_recycle_asks_a_ready_waiting_next_worker_to_exit():
    d = recycling(stop_grace_s=5)
    d.run_job(d.core.current, "long")
    d.bring_up(2)
    d.feed(RecycleAsked("SIGUSR1"))
    assert d.of(Send)[-1] == Send(2, Shutdown()) and d.kills() == []
    d.succeed(1, "long")  # no switch to a worker on its way out
    assert d.core.current == 1 and d.core.state is S.READY
    d.exit(2, 0)
    assert d.spawns() == [1, 2, 3]


def test_a_second_recycle_while_measuring_is_one_measure_and_one_next_worker():
    d = recycling(AUTO)
    d.feed(RecycleAsked("config reloaded"))
    assert len(d.of(MeasureMemory)) == 1
    d.measured(1, footprint=GiB, free=100 * GiB)
    assert d.spawns() == [1, 2] and d.logs("worker_overlap_started")[0].fields["why"] == "config reloaded"


def test_a_reload_mid_overlap_applies_its_limits_to_the_next_worker_too():
    d = recycling(heartbeat_timeout_s=30)
    d.feed(JobOffered("long"))  # keeps the switch waiting
    d.bring_up(2)
    d.feed(Reconfigured(Limits(heartbeat_timeout_s=3, overlap=ALWAYS)))
    for _ in range(3):
        d.advance(1)
        d.heartbeat(1)
    d.advance(0.2)
    assert d.kills() == [(2, "heartbeat")]  # the silent one, by the new limit
    d.exit(2, SIGKILL)
    assert overlaps(d) == ["failed"] and d.core.current == 1


def test_a_reload_that_turns_overlap_off_mid_overlap_lets_the_one_under_way_finish():
    d = recycling()
    d.run_job(d.core.current, "long")
    d.load(2)
    d.feed(Reconfigured(Limits(overlap=NEVER)))  # a HUP that changes only worker.overlap
    d.message(2, NEW)
    d.succeed(1, "long")
    assert d.core.current == 2 and overlaps(d) == ["switched"]


def test_a_reload_that_changes_the_worker_and_turns_overlap_off_recycles_plainly_once_the_next_is_gone():
    d = recycling()
    d.run_job(d.core.current, "long")
    d.load(2)
    d.feed(Reconfigured(Limits(overlap=NEVER)))
    d.feed(RecycleAsked("config reloaded"))  # new model settings: worker 2 loads the old ones
    assert d.kills() == [(2, "recycle")]
    d.exit(2, SIGKILL)
    assert d.spawns() == [1, 2] and d.core.state is S.BUSY  # never: after the job, as before
    d.succeed(1, "long")
    assert d.core.state is S.RESTARTING and d.of(Send)[-1] == Send(1, Shutdown())
    d.exit(1, 0)
    assert d.spawns() == [1, 2, 3] and d.core.current == 3


# --- the node stops in the middle ------------------------------------------------------------


def test_a_drain_deadline_mid_overlap_ends_both_workers_and_is_no_failed_recycle():
    d = recycling()
    d.run_job(d.core.current, "j")
    d.load(2)
    d.feed(StopAsked())  # the drain's deadline: no restart, no switch from now on
    shutdown = JobResult.failure("shutdown", "the node stopped before the job could finish")
    d.feed(AbortAsked(shutdown, "the node is stopping", KillReason.DRAIN_DEADLINE))
    assert set(d.kills()) == {(1, "drain_deadline"), (2, "stop")}
    d.message(2, NEW)  # ready too late
    d.exit(2, SIGKILL)
    d.exit(1, SIGKILL)
    assert d.ended("j") == shutdown and d.core.finished and d.core.state is S.STOPPED
    assert overlaps(d) == [] and restarts(d) == [] and not d.logs("worker_recycle_failed")


def test_a_drain_that_ends_in_time_stops_a_ready_next_worker_with_the_current_one():
    d = recycling(stop_grace_s=5)
    d.run_job(d.core.current, "j")
    d.bring_up(2)
    d.succeed(1, "j")  # the switch happens: the drain's queued jobs would run on worker 2
    assert d.core.current == 2
    d.feed(StopAsked(grace_s=5))
    assert Send(2, Shutdown()) in d.of(Send) and d.kills() == []
    d.exit(1, 0)
    d.exit(2, 0)
    assert d.core.finished and overlaps(d) == ["switched"]


def test_quit_mid_overlap_kills_both_at_once():
    d = recycling()
    d.load(2)
    d.feed(StopAsked())
    d.feed(AbortAsked(JobResult.failure("shutdown", "SIGQUIT"), "the node is stopping", KillReason.QUIT))
    d.feed(StopAsked(grace_s=0))
    assert {gen for gen, _ in d.kills()} == {1, 2}
    d.exit(1, SIGKILL)
    d.exit(2, SIGKILL)
    assert d.core.finished and overlaps(d) == [] and d.spawns() == [1, 2]


def test_a_stop_while_measuring_spawns_nothing():
    d = recycling(AUTO)
    d.feed(StopAsked(grace_s=5))
    d.measured(1, footprint=GiB, free=100 * GiB)
    assert d.spawns() == [1] and not d.logs("worker_overlap_decision")


def test_a_recycle_during_a_drain_is_ignored():
    d = Driver(overlap=ALWAYS).start()
    d.feed(StopAsked())
    d.feed(RecycleAsked("SIGUSR1"))
    assert d.spawns() == [1] and d.core.next is None
