"""schemathesis against the schema a running node serves: no 5xx, and every answer
conforms to the schema (status, content type, headers, body), including for methods a
path does not take and for data the schema forbids.

Bounded and reproducible: a fixed number of examples per operation and a fixed seed.
`positive_data_acceptance` is left out: data that fits the schema is not a job (the images
must be real JPEG, PNG or WebP bytes, which no schema can say), so /tryon answers it 4xx.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node import TOKEN, NodeProcess

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = 40
SEED = 20261201


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    proc = NodeProcess(tmp_path_factory.mktemp("schemathesis"), receiver.url).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


def test_every_answer_conforms_to_the_served_schema_and_none_is_a_5xx(node, tmp_path):
    command = [
        str(SCHEMATHESIS), "run", f"{node.base_url}/openapi.json",
        "--header", f"X-Internal-Auth: {TOKEN}",
        # Its own copy of the auth header would come on top of ours: two are a 401 here.
        "--generation-with-security-parameters", "false",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1",
        "--generation-database", "none", "--request-timeout", "30", "--no-color",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
    assert "8/8" in run.stdout  # every operation was tested
    errors = [e for e in node.events() if e["level"] == "ERROR"]
    assert not errors, errors
    assert node.gpu_status()["busy"] is False
