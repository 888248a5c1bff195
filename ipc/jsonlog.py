"""The one log format of the node: one JSON object per line, from both processes.

Lives in `ipc/` because the log stream is shared by the supervisor and the worker
(the worker inherits the supervisor's stdout), so its schema is part of the contract
between them. Standard `logging` underneath, so records from Sanic, aiohttp or a
backend library come out in the same shape (`event: "log"`).
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import datetime, timezone
from typing import IO, Any

import msgspec

from ipc.redaction import redact

_encoder = msgspec.json.Encoder(enc_hook=str)

# Loggers of libraries that are chatty at INFO without telling an operator anything.
_QUIET_LOGGERS = ("sanic.access", "sanic.server", "sanic.websockets", "asyncio")


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str, process: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        ts = datetime.fromtimestamp(record.created, tz=timezone.utc)
        line: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "event": event or "log",
            "node_id": self.node_id,
            "process": self.process,
        }
        if event is None:
            line["logger"] = record.name
            line["message"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # Credentials inside a configured URL never reach the log, wherever the URL appears.
        return _encoder.encode(redact(line)).decode()


def setup(node_id: str, process: str, level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger of this process into one JSON stream (stdout by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter(node_id, process))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level)


class EventLog:
    """`events.info("job_accepted", job_id=..., queue_position=0)` -> one JSON line."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """ERROR with the current exception's traceback, as a JSON field."""
        self._log(logging.ERROR, event, fields, exc_info=True)

    def _log(self, level: int, event: str, fields: dict, exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level, event, extra={"event": event, "fields": fields}, exc_info=exc_info
            )
