"""Input an attacker on the node's network would send: each gets its 4xx (or its job fails
`invalid_input`), never a 5xx, an ERROR line or a stuck connection."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from tests.support import images
from tests.support.client import start_long_job, submit, tryon_form
from tests.support.node import TOKEN, NodeProcess

MAX_BODY = 1024 * 1024
# A generous deadline that turns "never answers" into a failure; the node answers in ms.
ANSWER_WITHIN_S = 20.0


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    overrides = {"server": {"max_body_bytes": MAX_BODY}, "images": {"max_bytes": MAX_BODY // 2}}
    proc = NodeProcess(tmp_path_factory.mktemp("hostile"), receiver.url, overrides).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


def assert_error(status: int, body, expected: int, code: str) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and body["error"] == code and body["node_id"] == "test-node", body
    assert body["message"]


def nested(depth: int) -> str:
    """A config object nested `depth` levels deep: {"a": {"a": ... {} ...}}."""
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


# --- 3: a config that is not valid UTF-8, or nested too deep -------------------------


@pytest.mark.parametrize(
    "config",
    [
        pytest.param("[" * 8000 + "]" * 8000, id="array-8000-deep"),
        pytest.param('{"a":' * 2700 + "1" + "}" * 2700, id="object-2700-deep-under-16k"),
        pytest.param(nested(33), id="object-33-deep"),
        pytest.param(b'{"prompt": "\xff\xfe caf\xe9"}', id="latin-1-not-utf-8"),
        pytest.param(b"\xc3\x28", id="invalid-utf-8-sequence"),
    ],
)
async def test_config_too_deep_or_not_utf8_is_400(node, http, config):
    status, _, body = await submit(http, node.base_url, tryon_form("deep-config", config=config))
    assert_error(status, body, 400, "bad_request")


async def test_config_32_deep_is_judged_by_its_keys_not_its_depth(node, http):
    status, _, body = await submit(http, node.base_url, tryon_form("config-32", config=nested(32)))
    assert_error(status, body, 422, "validation_failed")
    assert [d["field"] for d in body["details"]] == ["config.a"]


# --- 5: a chunk size over server.max_body_bytes ----------------------------------------


async def test_chunk_size_over_the_body_limit_is_413_at_once(node):
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(
            f"POST /tryon HTTP/1.1\r\nHost: n\r\nX-Internal-Auth: {TOKEN}\r\n"
            "Content-Type: multipart/form-data; boundary=abc\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{MAX_BODY + 1:x}\r\n--abc\r\n".encode()
        )
        await writer.drain()
        # Nothing more is sent: the chunk's size line alone earns the 413.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN_S)
        assert head.split()[1] == b"413", head
        body = json.loads(await asyncio.wait_for(reader.read(), ANSWER_WITHIN_S))
        assert_error(413, body, 413, "payload_too_large")
    finally:
        writer.close()


# --- 6: a client that goes away mid-request ----------------------------------------------


async def test_a_client_that_disconnects_mid_body_is_request_aborted_not_an_error(node):
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(
        f"POST /tryon HTTP/1.1\r\nHost: n\r\nX-Internal-Auth: {TOKEN}\r\n"
        "Content-Type: multipart/form-data; boundary=abc\r\nContent-Length: 100000\r\n\r\n"
        '--abc\r\nContent-Disposition: form-data; name="person_image"\r\n\r\n'.encode() + b"\xff" * 5000
    )
    await writer.drain()
    await asyncio.to_thread(node.wait_event, "request_received", 30.0, content_length=100000)
    writer.transport.abort()  # gone, mid-body
    aborted = await asyncio.to_thread(node.wait_event, "request_aborted", ANSWER_WITHIN_S, route="/tryon")
    assert aborted["level"] == "INFO"
    assert not node.events("internal_error")
    assert not [e for e in node.events() if e["level"] == "ERROR"]
    assert not [s for s in node.request_statuses("/tryon") if s.startswith("5")]


# --- 8: X-Internal-Auth given twice ------------------------------------------------------


@pytest.mark.parametrize("second", [TOKEN, "another-value-0123456789"])
async def test_auth_header_given_twice_is_401_whatever_the_values(node, http, second):
    headers = [("X-Internal-Auth", TOKEN), ("X-Internal-Auth", second)]
    async with http.post(f"{node.base_url}/tryon", data=tryon_form("twice"), headers=headers) as response:
        assert_error(response.status, await response.json(), 401, "unauthorized")
    async with http.get(f"{node.base_url}/gpu/status", headers=headers) as response:
        assert_error(response.status, await response.json(), 401, "unauthorized")


# --- 9: a side no output format can hold -------------------------------------------------


@pytest.mark.parametrize("width, height", [(36_000_000, 1), (16384, 2), (3, 16384)])
async def test_a_side_over_images_max_side_is_422(node, http, width, height):
    form = tryon_form("wide", person_image=images.png_claiming(width, height))
    status, _, body = await submit(http, node.base_url, form)
    assert_error(status, body, 422, "validation_failed")
    assert [d["field"] for d in body["details"]] == ["person_image"]
    assert "16383" in body["details"][0]["message"]


async def test_a_side_of_exactly_images_max_side_is_accepted(node, http, receiver):
    # Only a header: admitted, then the worker's full decode finds no pixel data.
    form = tryon_form("side-16383", person_image=images.png_claiming(16383, 2))
    status, _, body = await submit(http, node.base_url, form)
    assert status == 202, body
    (callback,) = await receiver.await_callback("side-16383")
    assert callback.fields["error_code"] == "invalid_input"


# --- 10: a JPEG whose header claims more than its data holds -----------------------------


async def test_jpeg_claiming_6000x6000_with_5kb_of_data_fails_invalid_input(node, http, receiver):
    person = images.jpeg_claiming(6000, 6000)
    assert len(person) < 8000
    status, _, body = await submit(http, node.base_url, tryon_form("claims-6000", person_image=person))
    assert status == 202, body  # the header is all admission reads
    (callback,) = await receiver.await_callback("claims-6000")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "invalid_input"
    assert callback.fields["error_message"].startswith("person_image")
    assert "output_image" not in callback.files


# --- 11: job ids in URLs are percent-decoded ---------------------------------------------


async def test_job_id_in_the_url_is_percent_decoded(node, http, receiver):
    status, _, body = await submit(http, node.base_url, tryon_form("a:b.c", config={"steps": 1}))
    assert status == 202, body
    await receiver.await_callback("a:b.c")
    for path in ("/jobs/a:b.c", "/jobs/a%3Ab.c", "/jobs/a%3ab%2Ec"):
        code, job = node.get(path, token=TOKEN)
        assert code == 200 and job["job_id"] == "a:b.c", (path, job)
    code, body = request(node, "DELETE", "/jobs/a%3Ab.c")
    assert_error(code, body, 409, "not_cancellable")  # found, and already finished
    code, body = node.get("/jobs/a%3Ab.d", token=TOKEN)
    assert_error(code, body, 404, "not_found")


# --- a body on a route that takes none ---------------------------------------------------


async def test_delete_with_a_body_is_refused_from_its_headers_never_buffered(node):
    # DELETE /jobs takes no body. One declared must not be held in memory before the token
    # is checked (anyone could make the node buffer server.max_body_bytes per connection),
    # nor delay the 401: here it never comes, and the answer must not wait for it.
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(f"DELETE /jobs/nobody HTTP/1.1\r\nHost: n\r\nContent-Length: {MAX_BODY}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN_S)
        assert head.split()[1] == b"401", head
    finally:
        writer.close()


async def test_delete_with_a_body_that_cancels_a_job_is_202_and_no_error(node, http, receiver):
    await start_long_job(http, node, "cancel-with-a-body")
    headers = {"X-Internal-Auth": TOKEN, "Content-Type": "application/octet-stream"}
    async with http.delete(f"{node.base_url}/jobs/cancel-with-a-body", headers=headers, data=b"x" * 4096) as answer:
        assert answer.status == 202, await answer.text()
    (callback,) = await receiver.await_callback("cancel-with-a-body")
    assert callback.fields["status"] == "cancelled"
    assert not [e for e in node.events() if e["level"] == "ERROR"]


# --- 12: an image whose structure a header parser would walk in Python --------------------
# (Before the structure walk, each was judged by Pillow on the event loop, ~0.35 ms per KiB,
# and admitted: 202.)


@pytest.mark.parametrize("field", ["person_image", "garment_image"])
@pytest.mark.parametrize("make, reason", [
    (lambda: images.jpeg_with_fill(100 * 1024), "fill or junk bytes"),
    (lambda: images.jpeg_with_junk(100 * 1024), "fill or junk bytes"),
    (lambda: images.jpeg_with_segments(1000), "more than 1000 segments"),
    (lambda: images.jpeg_with_scans(101), "101 scans"),
    (lambda: images.png_with_chunks(1000), "more than 1000 chunks"),
], ids=["jpeg-fill", "jpeg-junk", "jpeg-segments", "jpeg-scans", "png-chunks"])
async def test_an_image_over_the_structure_limits_is_422_naming_it(node, http, field, make, reason):
    data = make()
    assert len(data) <= MAX_BODY // 2
    status, _, body = await submit(http, node.base_url, tryon_form("structure", **{field: data}))
    assert_error(status, body, 422, "validation_failed")
    assert [d["field"] for d in body["details"]] == [field]
    assert reason in body["details"][0]["message"]


async def test_photoshop_blocks_within_the_limits_are_admitted_and_the_job_runs(node, http, receiver):
    # Within every limit, and each APP13 block a step of Pillow's in Python: admission reads
    # none of them; the worker's decode (off the HTTP process) does, and the job succeeds.
    person = images.jpeg_with_photoshop_blocks(7)
    assert len(person) <= MAX_BODY // 2
    status, _, body = await submit(http, node.base_url, tryon_form("photoshop", person_image=person, config={"steps": 1}))
    assert status == 202, body
    (callback,) = await receiver.await_callback("photoshop")
    assert callback.fields["status"] == "succeeded", callback.fields


# --- 13: framing: a request target that is not a path, a body on a read -----------------------
# (Before: no answer and a traceback at ERROR for the first; 200 and an ERROR line for the second.)


async def raw_exchange(node, data: bytes) -> bytes:
    """Send `data` on a connection of its own; all that comes back until the node closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), ANSWER_WITHIN_S)  # the node closes after its answer
    finally:
        writer.close()


@pytest.mark.parametrize("line", [b"CONNECT host:443 HTTP/1.1", b"GET x HTTP/1.1", b"OPTIONS a:b HTTP/1.1"])
async def test_a_request_target_that_is_not_a_path_is_400_and_the_connection_closed(node, line):
    answer = await raw_exchange(node, line + b"\r\nHost: n\r\n\r\nGET /health HTTP/1.1\r\nHost: n\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"connection: close" in head.lower(), answer
    assert_error(400, json.loads(body), 400, "bad_request")
    assert answer.count(b"HTTP/1.1 ") == 1  # what followed was never read as a second request


@pytest.mark.parametrize("path", ["/health", "/health/live", "/version", "/metrics", "/openapi.json"])
async def test_a_body_on_a_read_of_an_open_route_is_400_without_an_error_line(node, path):
    request = f"GET {path} HTTP/1.1\r\nHost: n\r\nContent-Length: 5\r\n\r\nhello".encode()
    head, _, body = (await raw_exchange(node, request)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert_error(400, json.loads(body), 400, "bad_request")


async def test_an_empty_body_on_a_read_is_no_body(node):
    request = b"GET /health/live HTTP/1.1\r\nHost: n\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert (await raw_exchange(node, request)).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("headers", [
    "X-Internal-Auth: not-the-token\r\nContent-Length: 20000000",  # refused: the token
    f"X-Internal-Auth: {TOKEN}\r\nContent-Length: {MAX_BODY + 1}",  # refused: too large
], ids=["wrong-token", "too-large"])
async def test_expect_100_continue_refused_from_its_headers_gets_no_100_and_the_body_is_never_read(node, headers):
    # (Before: `100 Continue`, then the final answer with keep-alive, and the body read whole.)
    request = (f"POST /tryon HTTP/1.1\r\nHost: n\r\n{headers}\r\nExpect: 100-continue\r\n"
               "Content-Type: multipart/form-data; boundary=abc\r\n\r\n").encode()
    answer = await raw_exchange(node, request)  # no body sent: the node must answer and close
    head, _, body = answer.partition(b"\r\n\r\n")
    assert not answer.startswith(b"HTTP/1.1 100"), answer
    assert head.split()[1] in (b"401", b"413") and b"connection: close" in head.lower(), head


async def test_expect_100_continue_on_an_accepted_request_still_gets_its_100_and_its_202(node, http, receiver):
    form = tryon_form("expect-100", config={"steps": 1})
    async with http.post(f"{node.base_url}/tryon", data=form, headers={"X-Internal-Auth": TOKEN},
                         expect100=True) as response:
        assert response.status == 202, await response.text()
    (callback,) = await receiver.await_callback("expect-100")
    assert callback.fields["status"] == "succeeded"


@pytest.mark.parametrize("path", ["/gpu/status", "/metrics", "/health"])
async def test_a_client_that_half_closes_after_its_request_gets_its_answer(node, path):
    # (Before: /gpu/status and /metrics, whose work runs in a thread, were cancelled on the EOF.)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: n\r\nX-Internal-Auth: {TOKEN}\r\n\r\n".encode())
        await writer.drain()
        writer.write_eof()  # done sending; still reading
        answer = await asyncio.wait_for(reader.read(), ANSWER_WITHIN_S)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


# --- after all of the above --------------------------------------------------------------


async def test_no_5xx_and_no_error_lines_after_all_of_the_above(node):
    assert not [s for s in node.request_statuses("/tryon") if s.startswith("5")]
    errors = [e for e in node.events() if e["level"] == "ERROR"]
    assert not errors, [(e.get("message"), e.get("traceback", "")[-600:]) for e in errors]
    assert node.gpu_status()["busy"] is False



def request(node, method: str, path: str) -> tuple[int, dict]:
    req = urllib.request.Request(node.base_url + path, method=method, headers={"X-Internal-Auth": TOKEN})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
