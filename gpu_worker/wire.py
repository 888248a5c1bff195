"""The engine's types <-> the wire's structs, in one place.

The engine (`engine.py`) knows nothing of ZeroMQ or msgspec, and `ipc/messages.py` nothing of
backends; the worker process converts between them only through these functions.
"""

from __future__ import annotations

from typing import Any, Sequence

from gpu_worker.engine import Engine, JobInputs, Outcome
from ipc import codec
from ipc.messages import JobFailed, JobProgress, JobSucceeded, Ready, RunJob


def job_inputs(message: RunJob, blobs: Sequence[Any]) -> JobInputs:
    """A RunJob and its two image frames (person, garment) as the engine's inputs."""
    return JobInputs(
        job_id=message.job_id,
        person_image=codec.frame_bytes(blobs[0]),
        garment_image=codec.frame_bytes(blobs[1]),
        seed=message.seed,
        output_format=message.output_format,
        steps=message.steps,
        prompt=message.prompt,
        output_size=message.output_size,
    )


def ready(engine: Engine) -> Ready:
    info = engine.info
    return Ready(
        backend=info.backend,
        model_version=info.model_version,
        device=info.device,
        load_time_s=engine.load_time_s,
        torch_version=info.torch_version,
        comfyui_version=info.comfyui_version,
        comfyui_commit=info.comfyui_commit,
        engine_tested=info.engine_tested,
        engine_options=info.engine_options,
        gpu_compute_capability=info.gpu_compute_capability,
    )


def outcome_frames(
    job_id: str, outcome: Outcome, prepare_ms: float | None = None, finish_ms: float | None = None
) -> list[Any]:
    """The frames that end a job: its result with the image (zero-copy), or its failure."""
    if outcome.output is not None:
        out = outcome.output
        result = JobSucceeded(
            job_id=job_id, content_type=out.content_type, width=out.width, height=out.height,
            inference_ms=out.inference_ms, decode_ms=out.decode_ms, encode_ms=out.encode_ms,
            prepare_ms=prepare_ms or 0.0, finish_ms=finish_ms or 0.0,
        )
        return codec.encode(result, out.image)
    error = outcome.error
    assert error is not None
    return failure_frames(job_id, error.code, error.message, prepare_ms=prepare_ms, finish_ms=finish_ms)


def failure_frames(
    job_id: str, code: str, message: str, prepare_ms: float | None = None, finish_ms: float | None = None
) -> list[Any]:
    return codec.encode(JobFailed(job_id=job_id, error_code=code, message=message, prepare_ms=prepare_ms,
                                  finish_ms=finish_ms))


def progress_frames(job_id: str, step: int, total: int) -> list[Any]:
    return codec.encode(JobProgress(job_id=job_id, step=step, total=total))
