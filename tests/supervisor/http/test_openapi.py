"""The packaged schema (supervisor/http/openapi.yaml, served at /openapi.json) stays true: exactly
the routes and methods the app serves, every error code the code can answer, the callback as
a webhook, and it travels inside the package (a non-editable install serves it too).

Integration tests check the served copy against real answers (test_openapi_served.py) and
run schemathesis against it (test_schemathesis.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import yaml
from sanic import Sanic

from supervisor import config
from supervisor.http import openapi
from supervisor.http.app import create_app
from supervisor.http.errors import STATUS_CODES

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "supervisor" / "http" / "openapi.yaml"
MINIMAL = 'node_id: n\nauth: {tokens: ["0123456789abcdef"]}\ncallback: {url: "http://127.0.0.1:9/c", token: t}\n'


def test_openapi_documents_every_route_and_nothing_else():
    app = create_app(SimpleNamespace(config=config.parse(MINIMAL, {})))
    try:
        served = {
            (re.sub(r"<(\w+)(?::[^>]*)?>", r"{\1}", "/" + route.path.lstrip("/")), method.lower())
            for route in app.router.routes
            for method in route.methods
            if method not in ("HEAD", "OPTIONS")
        }
    finally:
        Sanic.unregister_app(app)
    spec = yaml.safe_load(SPEC.read_text())
    documented = {
        (path, method) for path, item in spec["paths"].items() for method in item if method != "parameters"
    }
    assert served == documented


def test_every_error_code_the_code_answers_is_in_the_schema():
    source = "\n".join(path.read_text() for path in (REPO / "supervisor").rglob("*.py"))
    raised = set(re.findall(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"', source)) | set(STATUS_CODES.values()) | {"http_error"}
    documented = set(openapi.schema()["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    assert raised == documented


def test_every_error_answer_has_the_error_shape():
    spec = openapi.schema()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in response:
                    response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"} or path == "/health", (path, method, status)


def test_the_callback_is_a_webhook_with_the_fields_the_node_sends():
    webhook = openapi.schema()["webhooks"]["callback"]["post"]
    assert webhook["requestBody"]["content"]["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/CallbackForm"
    }
    form = openapi.schema()["components"]["schemas"]["CallbackForm"]
    # The fields build_body() writes (tests/supervisor/delivery/test_callback.py checks their values).
    assert set(form["properties"]) == {
        "job_id", "user_id", "session_id", "provider", "node_id", "model_version", "status",
        "inference_time_ms", "queue_time_ms", "total_time_ms", "prepare_time_ms", "finish_time_ms", "error_code",
        "error_message", "output_image",
    }


def test_the_served_json_is_the_yaml_with_this_version():
    import json

    import supervisor

    served = json.loads(openapi.schema_json())
    assert served["info"]["version"] == supervisor.__version__
    assert served["paths"] == yaml.safe_load(SPEC.read_text())["paths"]


def test_a_built_wheel_carries_the_schema(tmp_path):
    """Package data, not a file beside the checkout: a container image's node serves it too."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("supervisor", "gpu_worker", "ipc"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("gpu_server-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert yaml.safe_load(archive.read("supervisor/http/openapi.yaml")) == yaml.safe_load(SPEC.read_text())
