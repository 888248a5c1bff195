"""External programs the deploy tests run. A missing one fails the test, naming it and where
it comes from: these checks must not silently stop running."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node import REPO

VENV_BIN = Path(sys.executable).parent
TOOLS = REPO / ".venv" / "tools"


def require(name: str, where: str) -> str:
    """The program's path; the test fails when it is not installed."""
    local = VENV_BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed ({where}); this check cannot run without it", pytrace=False)
    return found


def run(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd)
