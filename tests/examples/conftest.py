from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.node import REPO, free_port


@pytest.fixture
def stand_in(tmp_path):
    """`python examples/asset_service.py --port P`, as the README runs it; ready once it says so."""
    port = free_port()
    out = tmp_path / "received"
    process = subprocess.Popen(
        [sys.executable, "examples/asset_service.py", "--port", str(port), "--token", "cb-token", "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # Its first line: the listening notice, or an error (pytest-timeout bounds the wait).
    line = process.stdout.readline()
    assert "listening on http://127.0.0.1:%d/callback" % port in line, line + process.stdout.read()
    process.port, process.out = port, out
    yield process
    process.terminate()
    process.wait(30)
