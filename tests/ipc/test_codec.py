from __future__ import annotations

import msgspec
import pytest
import zmq

from ipc import codec
from ipc.messages import (
    PROTOCOL_VERSION, CancelJob, Heartbeat, Hello, JobFailed, JobProgress, JobSucceeded, Ready, RunJob, Shutdown,
    StartupFailed, WorkerSpec, decode_spec, encode_spec,
)

WORKER_MESSAGES = [
    Hello(protocol=PROTOCOL_VERSION, worker_id="w1", pid=42),
    Ready(backend="reference", model_version="reference-1", device="cpu", load_time_s=1.5, torch_version="2.13.0"),
    StartupFailed(reason="FileNotFoundError", message="no weights"),
    Heartbeat(),
    JobProgress(job_id="j1", step=3, total=8),
    JobFailed(job_id="j1", error_code="out_of_memory", message="CUDA OOM", inference_ms=12.5),
]
SUPERVISOR_MESSAGES = [CancelJob(job_id="j1"), Shutdown()]


@pytest.mark.parametrize("message", WORKER_MESSAGES)
def test_worker_messages_round_trip(message):
    decoded, blobs = codec.worker_message_decoder().decode(codec.encode(message))
    assert decoded == message and blobs == []


@pytest.mark.parametrize("message", SUPERVISOR_MESSAGES)
def test_supervisor_messages_round_trip(message):
    decoded, blobs = codec.supervisor_message_decoder().decode(codec.encode(message))
    assert decoded == message and blobs == []


def test_images_travel_as_frames_of_their_own_not_in_the_header():
    person, garment = b"P" * 100_000, b"G" * 50_000
    run = RunJob(job_id="j1", seed=7, output_format="png", steps=4, prompt="hi")
    frames = codec.encode(run, person, garment)
    assert len(frames) == 3 and frames[1] is person and frames[2] is garment
    assert len(frames[0]) < 200  # the header carries no image bytes
    decoded, blobs = codec.supervisor_message_decoder().decode(frames)
    assert decoded == run and blobs == [person, garment]
    result = JobSucceeded(job_id="j1", content_type="image/png", width=4, height=4, inference_ms=1.0)
    decoded, blobs = codec.worker_message_decoder().decode(codec.encode(result, b"out"))
    assert decoded == result and blobs == [b"out"]


def test_wrong_number_of_frames_is_refused_both_ways():
    run = RunJob(job_id="j1", seed=1, output_format="png")
    with pytest.raises(codec.ProtocolError):
        codec.encode(run, b"only one")
    header = codec.encode(Shutdown())[0]
    with pytest.raises(codec.ProtocolError):
        codec.supervisor_message_decoder().decode([header, b"unexpected"])
    with pytest.raises(codec.ProtocolError):
        codec.supervisor_message_decoder().decode([codec.encode(run, b"a", b"b")[0], b"a"])


def test_a_message_sent_the_wrong_way_is_a_protocol_error():
    with pytest.raises(codec.ProtocolError):
        codec.worker_message_decoder().decode(codec.encode(Shutdown()))
    with pytest.raises(codec.ProtocolError):
        codec.supervisor_message_decoder().decode(codec.encode(Heartbeat()))


@pytest.mark.parametrize("frames", [[], [b"\xc1garbage"], [msgspec.msgpack.encode({"type": "hello"})],
                                    [msgspec.msgpack.encode({"type": "hello", "protocol": 1, "worker_id": "w", "pid": 1, "extra": 1})]])
def test_garbage_is_a_protocol_error(frames):
    with pytest.raises(codec.ProtocolError):
        codec.worker_message_decoder().decode(frames)


def test_zero_copy_frames_over_a_real_socket_pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://codec-test")
        b.connect("inproc://codec-test")
        image = bytes(range(256)) * 4096
        a.send_multipart(codec.encode(JobSucceeded(job_id="j", content_type="image/png", width=1, height=1,
                                                   inference_ms=0.0), image), copy=False)
        message, blobs = codec.worker_message_decoder().decode(b.recv_multipart(copy=False))
        assert message.job_id == "j" and codec.frame_bytes(blobs[0]) == image
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def test_worker_spec_round_trips_through_the_environment_string():
    spec = WorkerSpec(worker_id="w1", endpoint="ipc:///tmp/x/worker.sock", parent_pid=1, node_id="n",
                      backend="reference", device="cpu", heartbeat_interval_s=1.0, max_pixels=10,
                      backend_settings={"default_steps": 3})
    assert decode_spec(encode_spec(spec)) == spec
