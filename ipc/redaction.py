"""Credentials inside URLs never reach a log line.

A configured URL may carry a secret: `https://user:password@host/...` or a query string
such as `?access_token=...`. The log formatter passes every string through `redact`, so
whatever logs a URL (a field, an exception's message, a traceback) shows it as
`https://***@host/...?access_token=***`.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<userinfo>[^\s/?#\"'<>]*@)?"  # greedy: up to the last @ of the authority
    r"(?P<rest>[^\s?#\"'<>]*)"
    r"(?P<query>\?[^\s#\"'<>]*)?"
)
_QUERY_VALUE = re.compile(r"=[^&;]*")


def redact_urls(text: str) -> str:
    """`text` with the user info and the query values of every URL in it masked."""
    if "://" not in text:
        return text
    return _URL.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    userinfo = f"{MASK}@" if match.group("userinfo") else ""
    query = match.group("query")
    if query:
        query = _QUERY_VALUE.sub(f"={MASK}", query)
    return f"{match.group('scheme')}{userinfo}{match.group('rest')}{query or ''}"


def redact(value: Any) -> Any:
    """Every string inside `value` (a log line's fields: str, list, dict) redacted."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value
