from __future__ import annotations

from supervisor import config as cfg
from supervisor.reload import plan_reload

BASE = """
node_id: node-1
auth: {tokens: ["0123456789abcdef"]}
callback: {url: "http://127.0.0.1:9/cb", token: t}
"""


def plan(extra_old: str, extra_new: str):
    return plan_reload(cfg.parse(BASE + extra_old, {}), cfg.parse(BASE + extra_new, {}))


def test_nothing_changed_is_an_empty_plan():
    result = plan("", "")
    assert result.changed == [] and not result.recycle_worker and result.needs_restart == []


def test_live_settings_apply_without_touching_the_worker():
    result = plan(
        "",
        "auth: {tokens: [\"fedcba9876543210\"]}\nqueue: {max_pending: 4}\n"
        "worker: {inference_timeout_s: 30, max_restarts: 2}\nlogging: {level: DEBUG}\n",
    )
    assert result.changed == [
        "auth.tokens", "logging.level", "queue.max_pending", "worker.inference_timeout_s", "worker.max_restarts",
    ]
    assert not result.recycle_worker
    assert result.applied.auth.tokens == ["fedcba9876543210"]
    assert result.applied.queue.max_pending == 4


def test_overlap_settings_apply_to_the_next_recycle_without_one_of_their_own():
    result = plan("", "worker: {overlap: never, overlap_margin_bytes: 0}\n")
    assert result.changed == ["worker.overlap", "worker.overlap_margin_bytes"] and not result.recycle_worker


def test_step_limits_and_the_output_size_apply_to_the_next_job_without_a_new_worker():
    # Both are read per job when it is accepted (the output size travels with the job).
    result = plan("", "limits: {steps: [2, 8]}\nimages: {output_size: model}\n")
    assert result.changed == ["images.output_size", "limits.steps"] and not result.recycle_worker
    assert result.applied.limits.steps == (2, 8) and result.applied.images.output_size == "model"


def test_settings_the_worker_is_spawned_with_recycle_it():
    assert plan("", "worker: {device: cpu}\n").recycle_worker
    assert plan("", "model: {reference: {default_steps: 3}}\n").recycle_worker
    assert plan("", "images: {max_pixels: 1000}\n").recycle_worker
    assert plan("", "model: {version: v2}\n").recycle_worker
    assert plan("", "model: {comfyui: {input_max_pixels: 1048576}}\n").recycle_worker


def test_listening_socket_identity_and_spool_need_a_restart_and_are_kept():
    result = plan("", "node_id: node-2\nserver: {port: 9999}\nspool: {dir: /tmp/elsewhere, max_age_s: 60}\n")
    assert result.needs_restart == ["node_id", "server.port", "spool.dir"]
    assert result.applied.node_id == "node-1"
    assert result.applied.server.port == 8080
    assert result.applied.spool.dir is None
    assert result.applied.spool.max_age_s == 60  # the rest of the section applies
