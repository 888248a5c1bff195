"""The lifecycle core's rules for what a worker says: one `got_<message type>` per message
of `ipc.messages.WorkerMessage` (Hello, Ready, StartupFailed, Heartbeat, JobProgress, a job's
stages: JobPrepared, ModelStarted, ModelDone, a result), and what a message that cannot be
read costs.

Any message at all is proof of life (the heartbeat watchdog reads when the generation was
last heard from). A message is judged for the generation that sent it: a Ready makes the
current worker serve, or the next one ready to take over (`recycle`); a result
ends the job only if that generation holds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipc.messages import (
    PROTOCOL_VERSION, Heartbeat, Hello, JobFailed, JobPrepared, JobProgress, JobSucceeded, ModelDone, ModelStarted,
    Ready, StartupFailed,
)
from supervisor.worker.generation import Generation, Phase, Stage
from supervisor.jobs.job import JobResult
from supervisor.worker.lifecycle.events import (
    EndJob, Received, ReportProgress, ReportStage, Timer, TimerKind, Undecodable, handler_name,
)
from supervisor.worker.reasons import KillReason
from supervisor.worker.wire import job_result

if TYPE_CHECKING:
    from supervisor.worker.lifecycle.base import Core


class WorkerMessages:
    """A base of `Lifecycle`, which owns the state these rules read and write (`base.Core`)."""

    # --- events ----------------------------------------------------------------------

    def on_received(self: Core, e: Received) -> None:
        gen = self.generations.get(e.gen)
        if gen is None:
            self._out.log("debug", "worker_message_dropped", generation=e.gen, message=type(e.message).__name__)
            return
        gen.last_heard = self._now
        getattr(self, handler_name("got_", type(e.message)))(gen, e.message, e.blobs)  # got_<message type>

    def on_undecodable(self: Core, e: Undecodable) -> None:
        if (gen := self.generations.get(e.gen)) is not None:
            # The worker and we are out of step, and a job waiting on it would wait forever.
            self._out.log("error", "worker_protocol_error", pid=gen.pid, error=e.error)
            message = f"the worker sent a message that could not be handled: {e.error}"
            self._abort(gen, JobResult.failure("backend_error", message), KillReason.PROTOCOL)

    # --- messages ----------------------------------------------------------------------

    def got_hello(self: Core, gen: Generation, message: Hello, blobs: tuple) -> None:
        if message.protocol != PROTOCOL_VERSION:
            self._out.log("error", "worker_protocol_mismatch", pid=gen.pid, worker_protocol=message.protocol,
                          supervisor_protocol=PROTOCOL_VERSION)
            self._kill(gen, KillReason.PROTOCOL)

    def got_ready(self: Core, gen: Generation, message: Ready, blobs: tuple) -> None:
        if gen.phase is not Phase.LOADING:
            return  # too late: it is being ended (a start timeout, a stop)
        gen.ready_at, gen.ready, gen.phase = self._now, message, Phase.IDLE
        self._out.cancel_timer(Timer(TimerKind.STARTUP, gen.number))
        self._out.log(
            "info", "worker_ready", pid=gen.pid, generation=gen.number, next=gen.number == self.next,
            backend=message.backend, device=message.device, model_version=message.model_version,
            torch=message.torch_version, comfyui=message.comfyui_version, comfyui_commit=message.comfyui_commit,
            engine_tested=message.engine_tested, engine_options=message.engine_options,
            gpu_compute_capability=message.gpu_compute_capability, load_time_s=round(message.load_time_s, 3),
            startup_s=round(self._now - (gen.spawned_at or 0.0), 3),
        )
        self._arm_watchdog(gen)
        if gen.number == self.current:
            self._became_ready(gen)
            self._maybe_recycle()
        else:
            self._maybe_switch()

    def got_startup_failed(self: Core, gen: Generation, message: StartupFailed, blobs: tuple) -> None:
        gen.startup_failure = message
        self._out.log("error", "worker_startup_failed", pid=gen.pid, reason=message.reason, error=message.message)

    def got_heartbeat(self: Core, gen: Generation, message: Heartbeat, blobs: tuple) -> None:
        pass  # its arrival is the news (last_heard)

    def got_job_progress(self: Core, gen: Generation, message: JobProgress, blobs: tuple) -> None:
        # Only for a job this generation holds: a report that crossed its job's end (or
        # came from a worker being replaced) is about nothing the node still runs there.
        if gen.holds(message.job_id):
            self._out.emit(ReportProgress(message.job_id, message.step, message.total))

    def got_job_prepared(self: Core, gen: Generation, message: JobPrepared, blobs: tuple) -> None:
        if self._moved_on(gen, message.job_id, Stage.PREPARE, Stage.PREPARE):
            self._out.emit(ReportStage(message.job_id, "prepared", message.prepare_ms))

    def got_model_started(self: Core, gen: Generation, message: ModelStarted, blobs: tuple) -> None:
        if self._moved_on(gen, message.job_id, Stage.PREPARE, Stage.MODEL):
            self._out.emit(ReportStage(message.job_id, "model_started"))
            self._show_model_stage(gen, f"job {message.job_id} in the model")

    def got_model_done(self: Core, gen: Generation, message: ModelDone, blobs: tuple) -> None:
        if self._moved_on(gen, message.job_id, Stage.MODEL, Stage.FINISH):
            self._out.emit(ReportStage(message.job_id, "model_done", message.inference_ms))
            self._show_model_stage(gen, f"job {message.job_id} past the model")
            self._maybe_switch()  # a next worker ready and waiting for the model stage to empty

    def _moved_on(self: Core, gen: Generation, job_id: str, was: Stage, now: Stage) -> bool:
        """Move `job_id` from stage `was` to `now`; False (logged) for a job it does not hold
        there: a message that crossed the job's end, or one out of step."""
        job = gen.jobs.get(job_id)
        if job is None or job.stage is not was:
            self._out.log("warning", "worker_stage_unexpected", pid=gen.pid, job_id=job_id, stage=now.value,
                          was=job.stage.value if job is not None else None)
            return False
        if now is not was:
            job.stage, job.stage_since = now, self._now
            self._arm_watchdog(gen)  # the new stage's time limit may come first
        return True

    def got_job_ended(self: Core, gen: Generation, message: JobSucceeded | JobFailed, blobs: tuple) -> None:
        if gen.jobs.pop(message.job_id, None) is None:
            self._out.log("warning", "worker_result_unexpected", pid=gen.pid, job_id=message.job_id)
            return
        self._out.emit(EndJob(message.job_id, job_result(message, blobs)))
        if gen.kill_reason is not None:
            return  # a result that raced its kill: the worker is going, not ready
        if gen.jobs:
            self._show_model_stage(gen, f"job {message.job_id} done")  # (it may have failed in the model)
            self._maybe_switch()
            return
        gen.phase = Phase.IDLE
        if gen.retire_when_done:  # replaced by the next worker; its last job is done
            self._retire(gen, KillReason.RECYCLE, self.limits.stop_grace_s)
            return
        if gen.number != self.current or self._maybe_recycle():
            return  # retired straight on (a plain recycle): no job is handed to it meanwhile
        self._show_model_stage(gen, f"job {message.job_id} done")
        self._maybe_switch()  # a next worker ready and waiting for this job to end

    got_job_succeeded = got_job_failed = got_job_ended
