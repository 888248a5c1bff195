"""Every bad input gets its contract status and JSON error, and leaves no trace."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import images
from tests.support.client import submit, tryon_form
from tests.support.node import TOKEN, NodeProcess

MAX_IMAGE = 256 * 1024
MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    proc = NodeProcess(
        tmp_path_factory.mktemp("bad-input"),
        receiver.url,
        {"images": {"max_bytes": MAX_IMAGE}, "server": {"max_body_bytes": MAX_BODY}},
    ).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


def assert_error(status: int, body, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict), body
    assert body["error"] == code
    assert body["node_id"] == "test-node"
    assert isinstance(body["message"], str) and body["message"]


def fields_of(body) -> set[str]:
    return {d["field"] for d in body["details"]}


INVALID_422 = [
    pytest.param({"omit": ("job_id", "user_id", "session_id", "provider", "person_image", "garment_image")},
                 {"job_id", "user_id", "session_id", "provider", "person_image", "garment_image"}, id="nothing"),
    pytest.param({"omit": ("provider",)}, {"provider"}, id="no-provider"),
    pytest.param({"provider": "openai"}, {"provider"}, id="wrong-provider"),
    pytest.param({"job_id": "has spaces in it"}, {"job_id"}, id="job-id-spaces"),
    pytest.param({"job_id": "x" * 500}, {"job_id"}, id="job-id-500-chars"),
    pytest.param({"user_id": ""}, {"user_id"}, id="empty-user-id"),
    pytest.param({"session_id": "a/b"}, {"session_id"}, id="session-id-slash"),
    pytest.param({"omit": ("garment_image",)}, {"garment_image"}, id="no-garment"),
    pytest.param({"config": {"stepz": 4}}, {"config.stepz"}, id="config-unknown-key"),
    pytest.param({"config": {"steps": 0, "seed": -1, "output_format": "gif"}},
                 {"config.steps", "config.seed", "config.output_format"}, id="config-bad-values"),
    pytest.param({"config": {"steps": "4"}}, {"config.steps"}, id="config-steps-string"),
    pytest.param({"config": {"prompt": "p" * 2001}}, {"config.prompt"}, id="config-prompt-too-long"),
    pytest.param({"config": {"prompt": "p" * 17000}}, {"config"}, id="config-over-16k"),
    pytest.param({"job_id": "bad id", "provider": "x", "config": {"nope": 1}},
                 {"job_id", "provider", "config.nope"}, id="every-problem-listed-at-once"),
]


@pytest.mark.parametrize("change, bad_fields", INVALID_422)
async def test_invalid_fields_get_one_422_listing_every_problem(node, http, change, bad_fields):
    change = dict(change)
    omit = change.pop("omit", ())
    job_id = change.pop("job_id", "bad-422")
    status, _, body = await submit(http, node.base_url, tryon_form(job_id, omit=omit, **change))
    assert_error(status, body, 422, "validation_failed")
    assert fields_of(body) == bad_fields


@pytest.mark.parametrize(
    "config",
    [pytest.param("{not json", id="not-json"), pytest.param("[1, 2]", id="array"), pytest.param('"text"', id="string")],
)
async def test_config_that_is_not_a_json_object_is_400(node, http, config):
    status, _, body = await submit(http, node.base_url, tryon_form("bad-400", config=config))
    assert_error(status, body, 400, "bad_request")


async def test_unparsable_config_comes_before_missing_fields(node, http):
    status, _, body = await submit(http, node.base_url, tryon_form("x", config="{", omit=("provider",)))
    assert_error(status, body, 400, "bad_request")


@pytest.mark.parametrize(
    "image",
    [pytest.param(b"just some text, not an image\n" * 10, id="text-file"), pytest.param(images.gif(), id="gif")],
)
async def test_bytes_that_are_not_jpeg_png_or_webp_are_415(node, http, image):
    # The declared content type says PNG; the bytes decide.
    form = aiohttp.FormData()
    for name, value in (("job_id", "bad-415"), ("user_id", "u"), ("session_id", "s"), ("provider", "qwen")):
        form.add_field(name, value)
    form.add_field("person_image", image, filename="person.png", content_type="image/png")
    form.add_field("garment_image", images.garment(), filename="garment.png", content_type="image/png")
    status, _, body = await submit(http, node.base_url, form)
    assert_error(status, body, 415, "unsupported_image")
    assert "person_image" in body["message"]


async def test_png_header_claiming_30000x30000_is_a_pixel_limit_422(node, http):
    form = tryon_form("bad-pixels", person_image=images.png_claiming(30000, 30000))
    status, _, body = await submit(http, node.base_url, form)
    assert_error(status, body, 422, "validation_failed")
    assert fields_of(body) == {"person_image"}


async def test_image_over_the_pixel_limit_but_under_the_bomb_threshold_is_422(node, http):
    form = tryon_form("bad-pixels-2", garment_image=images.png_claiming(8000, 5000))  # 40 MP > 36 MP
    status, _, body = await submit(http, node.base_url, form)
    assert_error(status, body, 422, "validation_failed")
    assert fields_of(body) == {"garment_image"}
    assert "40000000" in body["details"][0]["message"]


async def test_field_problems_come_before_image_problems(node, http):
    form = tryon_form("bad id", person_image=b"not an image")
    status, _, body = await submit(http, node.base_url, form)
    assert_error(status, body, 422, "validation_failed")
    assert fields_of(body) == {"job_id"}


async def test_image_over_images_max_bytes_is_413(node, http):
    big = images.noise(320, 320)
    assert MAX_IMAGE < len(big) < MAX_BODY
    status, _, body = await submit(http, node.base_url, tryon_form("bad-413-image", garment_image=big))
    assert_error(status, body, 413, "payload_too_large")
    assert "garment_image" in body["message"]


async def test_declared_body_over_the_limit_is_413_before_the_body_is_sent(node, http):
    # With Expect: 100-continue the client sends the body only if the server asks for it.
    form = tryon_form("bad-413-body", person_image=b"\xff" * (MAX_BODY + 1))
    async with http.post(f"{node.base_url}/tryon", data=form, headers={"X-Internal-Auth": TOKEN},
                         expect100=True) as response:
        body = await response.json()
        assert_error(response.status, body, 413, "payload_too_large")


async def test_declared_body_over_the_limit_is_413_without_expect_continue(node):
    body = b"x" * (MAX_BODY + 10)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    head = (
        f"POST /tryon HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Internal-Auth: {TOKEN}\r\n"
        f"Content-Type: multipart/form-data; boundary=abc\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[:1024])  # the rest never needs to be sent
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 30)
    assert status_line.split()[1] == b"413", status_line
    writer.close()


async def test_chunked_body_over_the_limit_is_413(node, http):
    async def chunks():
        yield b"--abc\r\nContent-Disposition: form-data; name=\"person_image\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MiB in all, no Content-Length

    headers = {"X-Internal-Auth": TOKEN, "Content-Type": "multipart/form-data; boundary=abc"}
    try:
        async with http.post(f"{node.base_url}/tryon", data=chunks(), headers=headers) as response:
            body = await response.json()
            assert_error(response.status, body, 413, "payload_too_large")
    except aiohttp.ClientError:
        # The node may close the connection before the client finished sending.
        pass
    errors = node.wait_event("validation_failed", status=413, message=f"the request body is over the limit of {MAX_BODY} bytes")
    assert errors["error"] == "payload_too_large"


@pytest.mark.parametrize(
    "content_type, data",
    [
        pytest.param("application/json", json.dumps({"job_id": "j"}).encode(), id="json-body"),
        pytest.param("application/x-www-form-urlencoded", b"job_id=j", id="urlencoded"),
        pytest.param("multipart/form-data", b"--x\r\n", id="multipart-without-boundary"),
        pytest.param("multipart/form-data; boundary=abc", b"garbage that is not multipart", id="malformed-multipart"),
        pytest.param("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-data; name=\"job_id\"\r\n\r\nj1", id="truncated-multipart"),
    ],
)
async def test_a_body_that_is_not_multipart_is_400(node, http, content_type, data):
    headers = {"X-Internal-Auth": TOKEN, "Content-Type": content_type}
    async with http.post(f"{node.base_url}/tryon", data=data, headers=headers) as response:
        assert_error(response.status, await response.json(), 400, "bad_request")


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", TOKEN + "x", ""])
async def test_missing_or_wrong_token_is_401(node, http, token):
    headers = {} if token is None else {"X-Internal-Auth": token}
    async with http.post(f"{node.base_url}/tryon", data=tryon_form("bad-401"), headers=headers) as response:
        body = await response.json()
    assert_error(response.status, body, 401, "unauthorized")


async def test_401_comes_before_everything_else(node, http):
    # Over the size limit, not multipart and unauthenticated: auth is judged first.
    headers = {"X-Internal-Auth": "nope", "Content-Type": "text/plain"}
    async with http.post(f"{node.base_url}/tryon", data=b"x" * 4096, headers=headers) as response:
        assert_error(response.status, await response.json(), 401, "unauthorized")


async def test_nothing_bad_left_a_trace(node, http, receiver):
    """After all of the above: no 5xx ever, the node is idle, no job was accepted."""
    status_code, status = node.get("/gpu/status", token=TOKEN)
    assert status_code == 200
    assert status["busy"] is False and status["current_job_id"] is None
    assert not [c for c in receiver.calls if c.fields.get("job_id", "").startswith("bad-")]
    _, text = node.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    statuses = {
        s.labels["status"]
        for s in families["gpu_server_requests"].samples
        if s.name.endswith("_total") and s.labels["route"] == "/tryon"
    }
    assert statuses and not [s for s in statuses if s.startswith("5")], statuses
    accepted = [s.value for s in families["gpu_server_jobs"].samples
                if s.name.endswith("_total") and s.labels["outcome"] == "accepted"]
    assert accepted == [0.0]
    # A valid job is still accepted: nothing was left holding the slot.
    status, _, body = await submit(http, node.base_url, tryon_form("after-bad-input"))
    assert status == 202, body
    await receiver.await_callback("after-bad-input")
