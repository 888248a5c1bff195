"""Keeping the worker's stdout one JSON object per line.

The worker shares the supervisor's stdout. Whatever a backend library prints there would
break the log stream, so: fd 1 is kept aside for the JSON log only, Python-level prints
become `library_output` log events, and C-level writes to fd 1 are sent to stderr.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO

from ipc.jsonlog import EventLog

events = EventLog("gpu_worker.stdout")


class _LineLogger(io.TextIOBase):
    def __init__(self, stream: str) -> None:
        self._stream = stream
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line.strip():
                events.info("library_output", stream=self._stream, line=line.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            events.info("library_output", stream=self._stream, line=self._pending)
        self._pending = ""


def capture_stdout() -> TextIO:
    """Return a text stream on the real stdout for the JSON log; capture everything else."""
    sys.stdout.flush()
    log_fd = os.dup(1)
    os.dup2(2, 1)
    log_stream = os.fdopen(log_fd, "w", buffering=1, encoding="utf-8")
    sys.stdout = _LineLogger("stdout")
    return log_stream
