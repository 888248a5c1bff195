"""What a worker is started with: its environment holds none of the supervisor's secrets."""

from __future__ import annotations

from supervisor import config
from supervisor.worker.spawn import worker_environ

CONFIG = """
node_id: node-1
auth: {tokens: ["${AUTH_TOKEN}", "a-second-token-0123456789"]}
callback: {url: "${CALLBACK_URL}", token: "Bearer ${CALLBACK_TOKEN}"}
events: {url: "http://orchestrator.internal/events", token: "${EVENTS_TOKEN}"}
metrics: {token: "${METRICS_TOKEN}"}
"""
ENV = {
    "AUTH_TOKEN": "auth-token-0123456789abcdef",
    "CALLBACK_URL": "https://user:password@assets.internal/cb?access_token=abc123",
    "CALLBACK_TOKEN": "callback-token-value",  # part of a secret: `Bearer ${CALLBACK_TOKEN}`
    "EVENTS_TOKEN": "events-token-value",
    "METRICS_TOKEN": "metrics-token-value",
    "PATH": "/usr/local/bin:/usr/bin",
    "HOME": "/tmp",
    "CUDA_VISIBLE_DEVICES": "0",
    "ORCHESTRATOR": "http://orchestrator.internal/events",  # a URL without a credential: no secret
}


def test_variables_holding_a_secret_stay_with_the_supervisor_the_rest_goes_to_the_worker():
    environ = worker_environ(config.parse(CONFIG, ENV), ENV)
    assert sorted(environ) == ["CUDA_VISIBLE_DEVICES", "HOME", "ORCHESTRATOR", "PATH"]


def test_short_values_are_not_judged_part_of_a_secret():
    # "0" and "/tmp" occur in many a token or URL: only whole secrets, or long parts, go.
    parsed = config.parse(CONFIG, {**ENV, "AUTH_TOKEN": "0/tmp-0123456789abcdef"})
    assert {"HOME", "CUDA_VISIBLE_DEVICES"} <= set(worker_environ(parsed, ENV))
