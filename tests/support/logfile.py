"""Reading the JSON log a process under test writes to a file: its events, and waiting for one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable


def read_events(path: Path, name: str | None = None) -> list[dict]:
    # Whole lines only: the process may be writing the last one as it is read.
    lines = path.read_text(errors="replace").split("\n")[:-1]
    parsed = [json.loads(line) for line in lines if line.strip()]
    return [e for e in parsed if name is None or e.get("event") == name]


def wait_for_event(path: Path, name: str, timeout: float, tail: Callable[[], str], **match: Any) -> dict:
    """Until the log holds `name` with fields equal to `match`; AssertionError with `tail()` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in read_events(path, name):
            if all(event.get(k) == v for k, v in match.items()):
                return event
        time.sleep(0.02)
    raise AssertionError(f"no {name} {match} within {timeout} s\n{tail()}")
