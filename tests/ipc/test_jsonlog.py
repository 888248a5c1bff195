from __future__ import annotations

import io
import json
import logging

import pytest

from ipc import jsonlog


@pytest.fixture
def stream():
    out = io.StringIO()
    jsonlog.setup("node-9", "supervisor", "DEBUG", out)
    yield out
    jsonlog.setup("node-9", "supervisor", "INFO", io.StringIO())


def lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_events_are_one_json_object_per_line_with_the_common_keys(stream):
    jsonlog.EventLog("t").info("job_accepted", job_id="j1", queue_position=0, nested={"a": [1, 2]})
    (entry,) = lines(stream)
    assert entry["event"] == "job_accepted" and entry["job_id"] == "j1" and entry["nested"] == {"a": [1, 2]}
    assert entry["node_id"] == "node-9" and entry["process"] == "supervisor" and entry["level"] == "INFO"
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]


def test_third_party_records_come_out_in_the_same_shape(stream):
    logging.getLogger("some.library").warning("disk %s is %d%% full", "/data", 93)
    (entry,) = lines(stream)
    assert entry["event"] == "log" and entry["logger"] == "some.library"
    assert entry["message"] == "disk /data is 93% full" and entry["level"] == "WARNING"


def test_exceptions_become_a_traceback_field_not_extra_lines(stream):
    try:
        raise ValueError("boom\nwith a newline")
    except ValueError:
        jsonlog.EventLog("t").exception("internal_error", route="/x")
    (entry,) = lines(stream)
    assert entry["exc_type"] == "ValueError" and "boom" in entry["traceback"]


def test_levels_filter(stream):
    jsonlog.set_level("WARNING")
    events = jsonlog.EventLog("t")
    events.info("quiet")
    events.warning("loud")
    assert [e["event"] for e in lines(stream)] == ["loud"]


def test_values_that_are_not_json_are_stringified(stream):
    class Thing:
        def __str__(self):
            return "a thing"

    jsonlog.EventLog("t").info("odd", value=Thing())
    assert lines(stream)[0]["value"] == "a thing"
