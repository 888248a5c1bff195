"""A property-based fuzzer of POST /tryon's multipart body, against the real node.

Hypothesis starts from a valid form and mutates it: parts dropped, repeated, added with
random names, values in odd encodings, images truncated, corrupted or claiming huge sizes,
headers of parts and of the request bent, the multipart framing itself broken. Whatever it
sends, the node answers a 4xx in the JSON error shape (or 202/429 for what is a valid job),
never a 5xx; it logs no ERROR; and it is idle afterwards, every accepted job called back.

Bounded and reproducible: a fixed number of examples, derandomized.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from typing import NamedTuple

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from supervisor.http import openapi
from tests.support import images
from tests.support.node import TOKEN, NodeProcess

EXAMPLES = 250
MAX_BODY = 2 * 1024 * 1024
ERROR_CODES = set(openapi.schema()["components"]["schemas"]["Error"]["properties"]["error"]["enum"])


class Part(NamedTuple):
    name: str | None
    value: bytes
    filename: str | None = None
    content_type: str | None = None
    extra_headers: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    overrides = {"server": {"max_body_bytes": MAX_BODY}, "images": {"max_bytes": MAX_BODY // 2}}
    proc = NodeProcess(tmp_path_factory.mktemp("fuzz"), receiver.url, overrides).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


# --- what the fuzzer draws from -------------------------------------------------------

PERSON = {fmt: images.person(96, 128, fmt.upper()) for fmt in ("jpeg", "png", "webp")}
GARMENT = images.garment(64, 80)
REQUIRED = ("job_id", "user_id", "session_id", "provider", "person_image", "garment_image")
NAMES = (*REQUIRED, "config", "", "Job_ID", "person_image\x00", "config[]", "x" * 300)

job_ids = itertools.count()
# What a mutation does to the valid form; replacing a value is the likeliest.
ACTIONS = ("drop", "repeat", "replace", "replace", "replace", "add", "shuffle", "rename", "headers")


@st.composite
def image_bytes(draw) -> bytes:
    base = draw(st.sampled_from([*PERSON.values(), GARMENT]))
    kind = draw(st.sampled_from(["valid", "truncated", "corrupted", "claims", "random", "empty", "oversize"]))
    if kind == "oversize":  # over images.max_bytes (and, twice over, server.max_body_bytes)
        return base + b"\0" * draw(st.sampled_from([MAX_BODY // 2, MAX_BODY]))
    if kind == "truncated":
        return base[: draw(st.integers(0, len(base) - 1))]
    if kind == "corrupted":
        data = bytearray(base)
        for index in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=20)):
            data[index] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "claims":
        width = draw(st.sampled_from([1, 6000, 16383, 16384, 65535, 36_000_000]))
        height = draw(st.sampled_from([1, 2, 6000, 65535]))
        if draw(st.booleans()) and width <= 65535:
            return images.jpeg_claiming(width, height)
        return images.png_claiming(width, height)
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "empty":
        return b""
    return base


@st.composite
def text_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["id", "text", "binary", "config", "deep"]))
    if kind == "id":
        return draw(st.from_regex(r"[A-Za-z0-9._:-]{1,140}", fullmatch=True)).encode()
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "config":
        config = draw(
            st.dictionaries(
                st.sampled_from(["seed", "steps", "prompt", "output_format", "stepz"]),
                st.one_of(st.integers(-5, 2**64), st.text(max_size=50), st.sampled_from(["png", "jpeg", "webp", "gif"]),
                          st.none(), st.booleans(), st.floats(allow_nan=True)),
                max_size=5,
            )
        )
        return json.dumps(config, allow_nan=True).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        return b"[" * depth + b"]" * depth
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-32"]))
    text = draw(st.text(max_size=100))
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def valid_parts() -> list[Part]:
    job_id = f"fuzz-{next(job_ids)}"
    return [
        Part("job_id", job_id.encode()), Part("user_id", b"user-1"), Part("session_id", b"session-1"),
        Part("provider", b"qwen"), Part("config", b'{"steps": 1}'),
        Part("person_image", PERSON["jpeg"], "p.jpg", "image/jpeg"),
        Part("garment_image", GARMENT, "g.png", "image/png"),
    ]


@st.composite
def forms(draw) -> list[Part]:
    parts = valid_parts()
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(ACTIONS))
        if action == "drop" and parts:
            parts.pop(draw(st.integers(0, len(parts) - 1)))
        elif action == "repeat" and parts:
            parts.append(draw(st.sampled_from(parts)))
        elif action == "replace" and parts:
            index = draw(st.integers(0, len(parts) - 1))
            part = parts[index]
            value = draw(image_bytes()) if part.name and part.name.endswith("_image") else draw(text_bytes())
            parts[index] = part._replace(value=value)
        elif action == "add":
            name = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=20)))
            value = draw(st.one_of(text_bytes(), image_bytes()))
            parts.append(Part(name, value, draw(st.one_of(st.none(), st.text(max_size=20)))))
        elif action == "shuffle":
            parts = draw(st.permutations(parts))
        elif action == "rename" and parts:
            index = draw(st.integers(0, len(parts) - 1))
            name = draw(st.one_of(st.none(), st.sampled_from(NAMES), st.text(max_size=10)))
            parts[index] = parts[index]._replace(name=name)
        elif action == "headers" and parts:
            index = draw(st.integers(0, len(parts) - 1))
            extra = draw(st.sampled_from([
                "Content-Transfer-Encoding: base64", "Content-Type: text/plain; charset=utf-16",
                "Content-Type: application/json; charset=latin-1", "X-Junk: \xff", "Content-Length: 99999999",
            ]))
            parts[index] = parts[index]._replace(extra_headers=(extra,))
    return list(parts)


class Request(NamedTuple):
    body: bytes
    content_type: str


def quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@st.composite
def requests_(draw) -> Request:
    parts = draw(forms())
    boundary = draw(st.sampled_from(["b0undary", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "x", "a" * 70]))
    newline = draw(st.sampled_from([b"\r\n"] * 19 + [b"\n"]))
    chunks = []
    for part in parts:
        disposition = "form-data"
        if part.name is not None:
            disposition += f'; name="{quote(part.name)}"'
        if part.filename is not None:
            disposition += f'; filename="{quote(part.filename)}"'
        head = [f"Content-Disposition: {disposition}"]
        if part.content_type:
            head.append(f"Content-Type: {part.content_type}")
        head.extend(part.extra_headers)
        chunks.append(
            b"--" + boundary.encode() + newline + newline.join(h.encode("utf-8", "surrogatepass") for h in head)
            + newline + newline + part.value + newline
        )
    ending = draw(st.sampled_from(["closed"] * 18 + ["missing", "truncated"]))
    body = b"".join(chunks)
    if ending == "closed":
        body += b"--" + boundary.encode() + b"--" + newline
    elif ending == "truncated" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    content_type = f"multipart/form-data; boundary={boundary}"
    if draw(st.integers(0, 9)) == 0:  # the request's own header bent, now and then
        content_type = draw(st.sampled_from([
            f'multipart/form-data; boundary="{boundary}"', f"Multipart/Form-Data; BOUNDARY={boundary}",
            "multipart/form-data; boundary=other", "multipart/form-data", f"multipart/mixed; boundary={boundary}",
            "application/octet-stream", f"multipart/form-data; charset=utf-16; boundary={boundary}",
        ]))
    return Request(body, content_type)


# --- the property ---------------------------------------------------------------------


def test_no_multipart_body_gets_a_5xx_or_leaves_a_trace(node, receiver):
    accepted: list[str] = []
    seen: collections.Counter[int | str] = collections.Counter()
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(request=requests_())
    def one(request: Request) -> None:
        try:
            response = session.post(
                f"{node.base_url}/tryon", data=request.body,
                headers={"X-Internal-Auth": TOKEN, "Content-Type": request.content_type}, timeout=60,
            )
        except requests.ConnectionError:
            # Over the body limit, the node may answer 413 and close before all was sent.
            assert len(request.body) > MAX_BODY
            seen["closed early"] += 1
            return
        seen[response.status_code] += 1
        assert response.status_code < 500, response.text
        body = response.json()
        if response.status_code == 202:
            accepted.append(body["job_id"])
            return
        assert set(body) <= {"error", "message", "node_id", "details"} and body["node_id"] == "test-node", body
        assert body["error"] in ERROR_CODES and body["message"], body
        if response.status_code in (429, 503):
            assert int(response.headers["Retry-After"]) >= 1

    one()
    # Idle afterwards: nothing accepted is stuck, every accepted job was called back.
    deadline = time.monotonic() + 120
    while node.gpu_status()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    status = node.gpu_status()
    assert status["busy"] is False and status["queue_length"] == 0 and status["worker"]["state"] == "ready"
    for job_id in accepted:
        receiver.wait_for(job_id, timeout=60)
    assert not [e for e in node.events() if e["level"] == "ERROR"]
    _, text = node.get("/metrics")
    statuses = {
        s.labels["status"]
        for family in text_string_to_metric_families(text)
        if family.name == "gpu_server_requests"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["route"] == "/tryon"
    }
    assert not [s for s in statuses if s.startswith("5")], statuses
    print(f"fuzzer: {sum(seen.values())} requests, answers {dict(sorted(seen.items(), key=str))}")
