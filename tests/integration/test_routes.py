"""The HTTP surface: auth on every protected route, public routes, JSON on every error."""

from __future__ import annotations

import pytest

from tests.support.node import TOKEN

PROTECTED = [("GET", "/gpu/status"), ("POST", "/tryon")]
PUBLIC = ["/health", "/health/live", "/version", "/metrics"]


@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize("token", [None, "", "not-the-token-0123456789", TOKEN.upper()])
async def test_every_protected_route_wants_a_valid_token(node, http, method, path, token):
    headers = {} if token is None else {"X-Internal-Auth": token}
    async with http.request(method, node.base_url + path, headers=headers) as response:
        body = await response.json()
    assert response.status == 401
    assert body == {"error": "unauthorized", "message": body["message"], "node_id": "test-node"}
    assert TOKEN not in str(body)


async def test_gpu_status_with_the_token(node):
    code, body = node.get("/gpu/status", token=TOKEN)
    assert code == 200
    assert set(body) == {
        "node_id", "busy", "current_job_id", "queue_length", "queue_capacity", "worker", "current_job_progress", "gpus",
    }
    assert body["current_job_progress"] is None  # no job runs
    assert set(body["worker"]) == {"state", "pid", "restarts", "model_loaded", "next"}
    assert body["worker"]["next"] is None  # no recycle under way
    assert body["worker"]["state"] == "ready" and body["worker"]["model_loaded"] is True
    assert isinstance(body["worker"]["pid"], int)
    assert body["gpus"] == []  # no NVML on a machine without a GPU driver


@pytest.mark.parametrize("path", PUBLIC)
def test_public_routes_need_no_token(node, path):
    code, _ = node.get(path)
    assert code == 200


def test_health_when_ready(node):
    code, body = node.get("/health")
    assert code == 200
    assert body == {
        "status": "ok", "node_id": "test-node", "model_loaded": True,
        "gpu_available": False, "worker_state": "ready",
    }


def test_version_reports_what_runs(node):
    code, body = node.get("/version")
    assert code == 200
    assert body["node_id"] == "test-node"
    assert body["backend"] == "reference"
    assert body["model_version"] == "reference-1"
    assert body["torch"].startswith("2.")
    assert body["comfyui"] is None and body["comfyui_commit"] is None and body["engine_tested"] is None
    assert body["version"]
    assert body["git_commit"]


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("GET", "/no/such/route", 404, "not_found"),
        ("GET", "/tryon", 405, "method_not_allowed"),
        ("DELETE", "/health", 405, "method_not_allowed"),
    ],
)
async def test_http_errors_are_json_too(node, http, method, path, status, code):
    async with http.request(method, node.base_url + path, headers={"Accept": "text/html"}) as response:
        assert response.status == status
        assert response.headers["Content-Type"].startswith("application/json")
        body = await response.json()
    assert body["error"] == code and body["node_id"] == "test-node"


@pytest.mark.parametrize(
    "method, path, headers",
    [("GET", "/health", {}), ("GET", "/metrics", {}), ("GET", "/no-such-route", {}),
     ("POST", "/tryon", {}), ("GET", "/gpu/status", {"X-Internal-Auth": TOKEN})],
)
async def test_no_empty_alt_svc_header_on_any_answer(node, http, method, path, headers):
    # Sanic sends `alt-svc:` (empty) unless told at start that the server is HTTP/1 only.
    async with http.request(method, node.base_url + path, headers=headers) as response:
        await response.read()
    assert "alt-svc" not in response.headers, dict(response.headers)
