"""The supervisor's job types <-> the wire's structs, in one place (the worker's side of the
same conversion is `gpu_worker/wire.py`)."""

from __future__ import annotations

from typing import Any, Sequence

from ipc import codec
from ipc.messages import JobFailed, JobSucceeded, RunJob
from supervisor.jobs.job import Job, JobResult


def run_job(job: Job) -> tuple[RunJob, bytes, bytes]:
    """The message that hands `job` to the worker, and its two image frames."""
    options = job.options
    assert options.seed is not None and options.output_format is not None  # resolved at admission
    assert job.person_image is not None and job.garment_image is not None  # kept until it ends
    message = RunJob(
        job_id=job.job_id,
        seed=options.seed,
        output_format=options.output_format,
        steps=options.steps,
        prompt=options.prompt,
        output_size=job.output_size,
    )
    return message, job.person_image, job.garment_image


def job_result(message: JobSucceeded | JobFailed, blobs: Sequence[Any]) -> JobResult:
    """How the worker said the job ended (the image copied out of its frame)."""
    if isinstance(message, JobSucceeded):
        return JobResult(
            image=codec.frame_bytes(blobs[0]),
            content_type=message.content_type,
            inference_ms=message.inference_ms,
            prepare_ms=message.prepare_ms,
            finish_ms=message.finish_ms,
        )
    return JobResult.failure(message.error_code, message.message, message.inference_ms, message.prepare_ms,
                             message.finish_ms)
