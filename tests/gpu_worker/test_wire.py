"""The engine's types <-> the wire's structs, both ways, through the real codec."""

from __future__ import annotations

from gpu_worker import wire
from gpu_worker.engine import Engine, JobError, JobOutput, LoadInfo, Outcome
from ipc import codec
from ipc.messages import JobFailed, JobSucceeded, Ready, RunJob


def test_a_run_job_becomes_the_engines_inputs():
    frames = codec.encode(RunJob(job_id="j1", seed=7, output_format="webp", steps=4, prompt="hi"), b"P", b"G")
    message, blobs = codec.supervisor_message_decoder().decode(frames)
    inputs = wire.job_inputs(message, blobs)
    assert inputs == ("j1", b"P", b"G", 7, "webp", 4, "hi", "person")  # images.output_size's default


def test_the_output_size_resolved_at_acceptance_reaches_the_engine():
    frames = codec.encode(RunJob(job_id="j1", seed=7, output_format="png", output_size="model"), b"P", b"G")
    message, blobs = codec.supervisor_message_decoder().decode(frames)
    assert wire.job_inputs(message, blobs).output_size == "model"


def test_a_loaded_engine_is_announced_with_its_versions():
    engine = Engine(None, LoadInfo("reference", "reference-1", "cpu", torch_version="2.13.0"), load_time_s=1.25)
    assert wire.ready(engine) == Ready(
        backend="reference", model_version="reference-1", device="cpu", load_time_s=1.25, torch_version="2.13.0",
    )


def test_the_engines_options_and_the_gpus_compute_capability_travel_in_ready():
    info = LoadInfo("comfyui", "comfyui:tryon", "cuda:0", engine_options={"gpu_only": True, "fast": ["fp8_matrix_mult"]},
                    gpu_compute_capability="9.0")
    frames = codec.encode(wire.ready(Engine(None, info, load_time_s=2.0)))
    ready, _ = codec.worker_message_decoder().decode(frames)
    assert (ready.engine_options, ready.gpu_compute_capability) == ({"gpu_only": True, "fast": ["fp8_matrix_mult"]}, "9.0")


def test_an_output_travels_with_its_image_and_a_failure_without():
    decoder = codec.worker_message_decoder()
    output = JobOutput(b"png-bytes", "image/png", 4, 3, inference_ms=12.5, decode_ms=1.0, encode_ms=2.0)
    message, blobs = decoder.decode(wire.outcome_frames("j1", Outcome(output, None)))
    assert message == JobSucceeded(
        job_id="j1", content_type="image/png", width=4, height=3, inference_ms=12.5, decode_ms=1.0, encode_ms=2.0,
    )
    assert [codec.frame_bytes(b) for b in blobs] == [b"png-bytes"]
    message, blobs = decoder.decode(wire.outcome_frames("j2", Outcome(None, JobError("invalid_input", "broken"))))
    assert message == JobFailed(job_id="j2", error_code="invalid_input", message="broken") and blobs == []


def test_the_engines_commit_and_whether_it_is_tested_reach_the_ready_message():
    info = LoadInfo("comfyui", "comfyui:tryon", "cpu", comfyui_version="0.38.1",
                    comfyui_commit="0123456789abcdef0123456789abcdef01234567", engine_tested=False)
    ready = wire.ready(Engine(None, info, load_time_s=1.0))
    assert (ready.comfyui_version, ready.comfyui_commit, ready.engine_tested) == (
        "0.38.1", "0123456789abcdef0123456789abcdef01234567", False)
