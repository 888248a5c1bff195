"""Credentials inside URLs are masked in whatever is logged."""

from __future__ import annotations

import io
import json
import logging

import pytest

from ipc import jsonlog
from ipc.jsonlog import EventLog
from ipc.redaction import redact, redact_urls


@pytest.mark.parametrize(
    "text, expected",
    [
        ("https://user:pw@assets.example/cb", "https://***@assets.example/cb"),
        ("http://h:8080/cb?access_token=abc&v=2", "http://h:8080/cb?access_token=***&v=***"),
        ("http://u:p@ss@h/x?t=1#frag", "http://***@h/x?t=***#frag"),  # an unencoded @ in the password
        ("see 'http://a:b@h/c?k=v' and https://x/y", "see 'http://***@h/c?k=***' and https://x/y"),
        ("http://h/plain", "http://h/plain"),
        ("no url at all, user:pw@host", "no url at all, user:pw@host"),
        ("ipc:///run/user/0/gpusrv-1-x/worker.sock", "ipc:///run/user/0/gpusrv-1-x/worker.sock"),
    ],
)
def test_user_info_and_query_values_are_masked(text, expected):
    assert redact_urls(text) == expected


def test_redact_walks_nested_fields():
    value = {"url": "http://u:p@h/", "problems": ["x: http://h/?token=t"], "n": 3, "none": None}
    assert redact(value) == {"url": "http://***@h/", "problems": ["x: http://h/?token=***"], "n": 3, "none": None}


def test_the_json_log_never_writes_a_url_credential():
    stream = io.StringIO()
    jsonlog.setup("n1", "supervisor", "INFO", stream)
    try:
        log = EventLog("test.redaction")
        log.info("callback_attempt", url="https://svc:hunter2@assets/cb?access_token=s3cret")
        try:
            raise ConnectionError("cannot reach https://svc:hunter2@assets/cb?access_token=s3cret")
        except ConnectionError:
            log.exception("callback_attempt_error")
        logging.getLogger("aiohttp.client").warning("GET https://svc:hunter2@assets/x failed")
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "hunter2" not in text and "s3cret" not in text and "svc" not in text
    first = json.loads(text.splitlines()[0])
    assert first["url"] == "https://***@assets/cb?access_token=***"
