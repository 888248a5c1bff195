"""The supervisor's jobs as the worker's messages."""

from __future__ import annotations

from supervisor.jobs.job import Job, JobOptions
from supervisor.worker.wire import run_job


def test_a_job_goes_to_the_worker_with_its_resolved_options_and_output_size():
    job = Job(
        job_id="j1", user_id="u", session_id="s", provider="qwen",
        options=JobOptions(seed=3, steps=4, prompt="red", output_format="webp"),
        person_image=b"P", garment_image=b"G", accepted_mono=0.0, output_size="model",
    )
    message, person, garment = run_job(job)
    assert (message.job_id, message.seed, message.steps, message.prompt) == ("j1", 3, 4, "red")
    assert (message.output_format, message.output_size) == ("webp", "model")
    assert (person, garment) == (b"P", b"G")
