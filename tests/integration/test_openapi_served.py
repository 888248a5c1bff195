"""The schema the node serves is the packaged one, and the answers schemathesis cannot
reach by itself (it has no real images: no 202, no known job) conform to it too."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest
import requests
import schemathesis

from supervisor.http import openapi
from tests.support import images
from tests.support.images import LONG_JOB_CONFIG
from tests.support.node import TOKEN, NodeProcess

AUTH = {"X-Internal-Auth": TOKEN}


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    proc = NodeProcess(tmp_path_factory.mktemp("openapi"), receiver.url).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


@pytest.fixture(scope="module")
def schema(node):
    return schemathesis.openapi.from_url(f"{node.base_url}/openapi.json")


def files(job_id: str, person: bytes | None = None, config: dict | None = None) -> dict:
    parts = {
        "job_id": (None, job_id), "user_id": (None, "user-1"), "session_id": (None, "session-1"),
        "provider": (None, "qwen"),
        "person_image": ("p.jpg", person if person is not None else images.person(fmt="JPEG")),
        "garment_image": ("g.png", images.garment()),
    }
    if config is not None:
        parts["config"] = (None, json.dumps(config))
    return parts


def conforms(schema, path: str, method: str, response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    schema[path][method].validate_response(response)
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else {}


def test_the_served_schema_is_the_packaged_one(node):
    response = requests.get(f"{node.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    served = response.json()
    assert served == openapi.schema()
    assert served["openapi"].startswith("3.1") and "callback" in served["webhooks"]


def test_answers_about_real_jobs_conform(node, schema, receiver):
    base = node.base_url

    def post(job_id: str, **kw) -> requests.Response:
        return requests.post(f"{base}/tryon", headers=AUTH, files=files(job_id, **kw), timeout=30)

    long_job = post("oa-long", person=images.LONG_JOB_PERSON, config=LONG_JOB_CONFIG)
    accepted = conforms(schema, "/tryon", "POST", long_job, 202)
    assert accepted["job_id"] == "oa-long"
    node.wait_event("inference_started", job_id="oa-long")
    busy = post("oa-busy")
    conforms(schema, "/tryon", "POST", busy, 429)
    assert int(busy.headers["Retry-After"]) >= 1
    conforms(schema, "/tryon", "POST", post("oa-long"), 409)
    status = conforms(schema, "/gpu/status", "GET", requests.get(f"{base}/gpu/status", headers=AUTH, timeout=10), 200)
    assert status["current_job_id"] == "oa-long"
    job = conforms(schema, "/jobs/{job_id}", "GET", requests.get(f"{base}/jobs/oa-long", headers=AUTH, timeout=10), 200)
    assert job["state"] == "running"
    conforms(schema, "/jobs/{job_id}", "DELETE", requests.delete(f"{base}/jobs/oa-long", headers=AUTH, timeout=10), 202)
    receiver.wait_for("oa-long")
    conforms(schema, "/jobs/{job_id}", "DELETE", requests.delete(f"{base}/jobs/oa-long", headers=AUTH, timeout=10), 409)
    job = conforms(schema, "/jobs/{job_id}", "GET", requests.get(f"{base}/jobs/oa-long", headers=AUTH, timeout=10), 200)
    assert job["state"] == "cancelled" and job["error_code"] == "cancelled"

    conforms(schema, "/tryon", "POST", post("oa-wide", person=images.png_claiming(20000, 2)), 422)
    conforms(schema, "/tryon", "POST", post("oa-gif", person=images.gif()), 415)
    conforms(schema, "/tryon", "POST", post("oa-bad", config={"steps": 0}), 422)
    not_json = requests.post(f"{base}/tryon", headers=AUTH, data=b"{}", timeout=10)
    conforms(schema, "/tryon", "POST", not_json, 400)
    conforms(schema, "/tryon", "POST", requests.post(f"{base}/tryon", files=files("oa-anon"), timeout=10), 401)
    conforms(schema, "/jobs/{job_id}", "GET", requests.get(f"{base}/jobs/oa-none", headers=AUTH, timeout=10), 404)


def test_answers_of_the_open_routes_conform(node, schema):
    for path in ("/health", "/health/live", "/version", "/metrics", "/openapi.json"):
        conforms(schema, path, "GET", requests.get(node.base_url + path, timeout=10), 200)
    wrong_method = requests.put(f"{node.base_url}/jobs/x", headers=AUTH, timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, DELETE"
    assert wrong_method.json()["error"] == "method_not_allowed"


def test_callbacks_conform_to_the_webhook(node, receiver):
    form = files("oa-ok", config={"steps": 1})
    response = requests.post(f"{node.base_url}/tryon", headers=AUTH, files=form, timeout=30)
    assert response.status_code == 202, response.text
    spec = openapi.schema()
    webhook = spec["webhooks"]["callback"]["post"]
    form_schema = webhook["requestBody"]["content"]["multipart/form-data"]["schema"]
    validator = jsonschema_rs.Draft202012Validator({**form_schema, "components": spec["components"]})
    required_headers = {p["name"].lower() for p in webhook["parameters"] if p["in"] == "header" and p["required"]}
    for job_id, status in (("oa-ok", "succeeded"), ("oa-long", "cancelled")):
        (callback,) = receiver.wait_for(job_id)
        fields = {**callback.fields, **{name: "<file>" for name in callback.files}}
        errors = [str(e) for e in validator.iter_errors(fields)]
        assert not errors and fields["status"] == status, (errors, fields)
        assert required_headers <= {name.lower() for name in callback.headers}
