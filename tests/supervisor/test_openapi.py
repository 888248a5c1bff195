"""docs/openapi.yaml stays true: it lists exactly the routes and methods the app serves."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import yaml
from sanic import Sanic

from supervisor import config
from supervisor.app import create_app

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
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
