"""One job end to end: POST /tryon -> 202 -> worker -> callback with the result."""

from __future__ import annotations

import io

from PIL import Image

from supervisor import __version__
from tests.support import images
from tests.support.client import submit, tryon_form
from tests.support.node import CALLBACK_TOKEN

CALLBACK_FIELDS = {
    "job_id", "user_id", "session_id", "provider", "node_id", "model_version", "status",
    "inference_time_ms", "queue_time_ms", "total_time_ms",
}


async def test_job_callback_carries_every_field_and_a_decodable_image(node, receiver, http):
    person = images.person(320, 448)
    status, _, body = await submit(http, node.base_url, tryon_form("flow-1", person_image=person, config={"seed": 5}))
    assert status == 202, body
    assert body == {"status": "accepted", "job_id": "flow-1", "node_id": "test-node", "queue_position": 0}

    (callback,) = await receiver.await_callback("flow-1")
    assert callback.headers["X-Internal-Auth"] == CALLBACK_TOKEN
    assert callback.headers["User-Agent"] == f"gpu-server/{__version__}"  # not aiohttp's own
    assert callback.content_type.startswith("multipart/form-data")
    assert CALLBACK_FIELDS <= set(callback.fields)
    assert callback.fields["status"] == "succeeded"
    assert callback.fields["user_id"] == "user-1"
    assert callback.fields["session_id"] == "session-1"
    assert callback.fields["provider"] == "qwen"
    assert callback.fields["node_id"] == "test-node"
    assert callback.fields["model_version"] == "reference-1"
    assert "error_code" not in callback.fields
    timings = {k: int(callback.fields[k]) for k in ("inference_time_ms", "queue_time_ms", "total_time_ms")}
    assert timings["inference_time_ms"] <= timings["total_time_ms"]
    assert timings["queue_time_ms"] <= timings["total_time_ms"]

    filename, content_type, data = callback.files["output_image"]
    assert (filename, content_type) == ("flow-1.png", "image/png")
    output = Image.open(io.BytesIO(data))
    output.load()
    assert output.format == "PNG"
    assert output.size == (320, 448)  # the person image's size


async def test_a_photo_taken_turned_comes_back_upright_at_the_persons_size(node, receiver, http):
    upright = images.person(320, 448, fmt="PNG")
    outputs = {}
    for job_id, person in (("upright", upright), ("turned-6", images.taken_turned(upright, 6))):
        form = tryon_form(job_id, person_image=person, config={"seed": 9, "steps": 2})
        status, _, body = await submit(http, node.base_url, form)
        assert status == 202, body
        (callback,) = await receiver.await_callback(job_id)
        outputs[job_id] = Image.open(io.BytesIO(callback.files["output_image"][2]))
    assert outputs["turned-6"].size == (320, 448)  # upright, though stored 448x320
    # The model saw the same upright picture: the same seed gives the same pixels.
    assert outputs["turned-6"].tobytes() == outputs["upright"].tobytes()


async def test_output_format_follows_the_job_config(node, receiver, http):
    for fmt, content_type, pil_format in (("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")):
        job_id = f"flow-{fmt}"
        status, _, body = await submit(http, node.base_url, tryon_form(job_id, config={"output_format": fmt}))
        assert status == 202, body
        (callback,) = await receiver.await_callback(job_id)
        _, got_type, data = callback.files["output_image"]
        assert got_type == content_type
        assert Image.open(io.BytesIO(data)).format == pil_format


async def test_same_seed_gives_the_same_image_and_another_seed_does_not(node, receiver, http):
    outputs = {}
    for job_id, seed in (("seed-a", 11), ("seed-b", 11), ("seed-c", 12)):
        status, _, body = await submit(http, node.base_url, tryon_form(job_id, config={"seed": seed, "steps": 3}))
        assert status == 202, body
        (callback,) = await receiver.await_callback(job_id)
        outputs[job_id] = Image.open(io.BytesIO(callback.files["output_image"][2])).tobytes()
    assert outputs["seed-a"] == outputs["seed-b"]
    assert outputs["seed-a"] != outputs["seed-c"]


async def test_corrupt_image_found_by_the_worker_fails_the_job_with_invalid_input(node, receiver, http):
    status, _, body = await submit(http, node.base_url, tryon_form("corrupt-1", person_image=images.truncated_jpeg()))
    assert status == 202, body  # the header parses; only the full decode finds the damage
    (callback,) = await receiver.await_callback("corrupt-1")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "invalid_input"
    assert "person_image" in callback.fields["error_message"]
    assert "output_image" not in callback.files
    # The node is free again and takes the next job.
    status, _, body = await submit(http, node.base_url, tryon_form("after-corrupt"))
    assert status == 202, body
    (callback,) = await receiver.await_callback("after-corrupt")
    assert callback.fields["status"] == "succeeded"


async def test_duplicate_job_id_is_refused_with_409(node, receiver, http):
    status, _, _ = await submit(http, node.base_url, tryon_form("dup-1"))
    assert status == 202
    await receiver.await_callback("dup-1")
    status, _, body = await submit(http, node.base_url, tryon_form("dup-1"))
    assert status == 409
    assert body["error"] == "duplicate_job"
    assert len(receiver.for_job("dup-1")) == 1
