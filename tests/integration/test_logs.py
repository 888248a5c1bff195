"""Logs: one JSON object per line on stdout, from both processes; never a token."""

from __future__ import annotations

import json
from datetime import datetime

from tests.support.client import submit, tryon_form
from tests.support.node import CALLBACK_TOKEN, TOKEN


async def test_every_line_is_json_with_the_common_keys(node, receiver, http):
    await submit(http, node.base_url, tryon_form("bad id"))  # a validation failure
    await submit(http, node.base_url, tryon_form("logs-1"), token="wrong-token-value")  # a 401
    status, _, _ = await submit(http, node.base_url, tryon_form("logs-1"))
    assert status == 202
    await receiver.await_callback("logs-1")
    node.wait_event("callback_succeeded", job_id="logs-1")

    lines = node.log_lines()
    assert lines
    processes = set()
    for line in lines:
        entry = json.loads(line)  # fails the test on any non-JSON line
        assert {"ts", "level", "event", "node_id", "process"} <= set(entry), entry
        assert entry["node_id"] == "test-node"
        datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
        processes.add(entry["process"])
    assert processes == {"supervisor", "gpu_worker"}

    text = "\n".join(lines)
    assert TOKEN not in text and CALLBACK_TOKEN not in text and "wrong-token-value" not in text

    events = {json.loads(line)["event"] for line in lines}
    assert {
        "request_received", "validation_failed", "validation_passed", "job_accepted", "inference_started",
        "inference_completed", "callback_attempt", "callback_succeeded", "cleanup_done", "worker_started",
        "worker_ready",
    } <= events

    job_events = [json.loads(line) for line in lines if json.loads(line).get("job_id") == "logs-1"]
    assert {e["process"] for e in job_events} == {"supervisor", "gpu_worker"}
