"""The API's OpenAPI 3.1 schema, served at `GET /openapi.json`.

The schema is written by hand in `openapi.yaml` beside this module (package data, so an
installed node, editable or not, serves it); tests keep it true against the routes and
run schemathesis against the served copy.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml

SCHEMA_FILE = "openapi.yaml"


@functools.cache
def schema() -> dict[str, Any]:
    import supervisor

    document = yaml.safe_load(resources.files("supervisor.http").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    document["info"]["version"] = supervisor.__version__
    return document


@functools.cache
def schema_json() -> bytes:
    """Parsed once (YAML is slow to parse), then served from memory."""
    return json.dumps(schema(), separators=(",", ":")).encode()
