"""HUP reloads the config, USR1 recycles the worker, QUIT stops at once.
(TERM and INT, the drain: test_shutdown.py.)"""

from __future__ import annotations

import asyncio
import signal

import yaml

from tests.integration.test_metrics import scrape, value
from tests.support.client import start_long_job, submit, tryon_form
from tests.support.node import TOKEN, NodeProcess
from tests.support.processes import wait_gone

NEW_TOKEN = "a-second-token-0123456789"


def write_config(node: NodeProcess, config: dict) -> None:
    node.config_path.write_text(yaml.safe_dump(config))


async def test_sighup_with_a_broken_file_keeps_the_old_config(tmp_path, receiver, http):
    node = NodeProcess(tmp_path, receiver.url).start()
    try:
        pid = node.worker_pid()
        node.config_path.write_text("node_id: test-node\nserver: {port: 0}\nauth: {tokens: []}\n")
        node.signal(signal.SIGHUP)
        failed = await asyncio.to_thread(node.wait_event, "config_reload_failed")
        assert any(p.startswith("server.port") for p in failed["problems"])
        assert any(p.startswith("callback") for p in failed["problems"])

        code, body = node.get("/health")
        assert code == 200, body
        status, _, body = await submit(http, node.base_url, tryon_form("hup-broken"))
        assert status == 202, body  # the old token still works
        (callback,) = await receiver.await_callback("hup-broken")
        assert callback.fields["status"] == "succeeded"
        assert node.worker_pid() == pid
    finally:
        write_config(node, node.config)
        assert node.stop() == 0, node.tail()


async def test_sighup_applies_live_settings_at_once_and_recycles_for_model_settings(tmp_path, receiver, http):
    node = NodeProcess(tmp_path, receiver.url).start()
    try:
        pid = node.worker_pid()
        config = dict(node.config)
        config["auth"] = {"tokens": [TOKEN, NEW_TOKEN]}
        config["worker"] = {**config["worker"], "inference_timeout_s": 120}
        write_config(node, config)
        node.signal(signal.SIGHUP)
        reloaded = await asyncio.to_thread(node.wait_event, "config_reloaded")
        assert reloaded["changed"] == ["auth.tokens", "worker.inference_timeout_s"]
        assert reloaded["recycle_worker"] is False
        status, _, body = await submit(http, node.base_url, tryon_form("hup-new-token"), token=NEW_TOKEN)
        assert status == 202, body
        await receiver.await_callback("hup-new-token")
        assert node.worker_pid() == pid  # nothing the worker was spawned with changed

        config["model"] = {"reference": {"default_steps": 2}}
        write_config(node, config)
        node.signal(signal.SIGHUP)
        await asyncio.to_thread(node.wait_event, "config_reloaded", recycle_worker=True)
        exited = await asyncio.to_thread(node.wait_event, "worker_exited", pid=pid)
        assert exited["reason"] == "recycle" and exited["level"] == "INFO"
        await asyncio.to_thread(node.wait_ready)
        assert node.worker_pid() != pid
    finally:
        assert node.stop() == 0, node.tail()


async def test_step_limits_are_checked_at_admission_and_a_reload_changes_them_at_once(tmp_path, receiver, http):
    # A node whose workflow was trained for 4 steps (a Lightning LoRA, say).
    node = NodeProcess(tmp_path, receiver.url, {
        "limits": {"steps": [4, 4]}, "model": {"reference": {"default_steps": 4}},
    }).start()
    try:
        pid = node.worker_pid()
        status, _, body = await submit(http, node.base_url, tryon_form("steps-8", config={"steps": 8}))
        assert status == 422 and body["error"] == "validation_failed", body
        assert body["details"] == [
            {"field": "config.steps", "message": "8 is outside the range this node allows: 4 to 4 (limits.steps)"},
        ]
        for job_id, config in (("steps-4", {"steps": 4}), ("steps-default", None)):
            status, _, body = await submit(http, node.base_url, tryon_form(job_id, config=config))
            assert status == 202, body
            (callback,) = await receiver.await_callback(job_id)
            assert callback.fields["status"] == "succeeded"

        config = dict(node.config)
        config["limits"] = {"steps": [1, 8]}
        write_config(node, config)
        node.signal(signal.SIGHUP)
        reloaded = await asyncio.to_thread(node.wait_event, "config_reloaded")
        assert reloaded["changed"] == ["limits.steps"] and reloaded["recycle_worker"] is False
        # The 422 before left no trace: the same job_id is welcome now.
        status, _, body = await submit(http, node.base_url, tryon_form("steps-8", config={"steps": 8}))
        assert status == 202, body
        (callback,) = await receiver.await_callback("steps-8")
        assert callback.fields["status"] == "succeeded"
        assert node.wait_event("inference_started", job_id="steps-8")["steps"] == 8
        assert node.worker_pid() == pid
    finally:
        assert node.stop() == 0, node.tail()


async def test_sigusr1_recycles_the_worker_after_its_job_and_is_not_a_crash(tmp_path, receiver, http):
    # max_restarts 0: a single counted restart would end the node with exit 3. A plain
    # recycle (overlap never); with overlap: test_recycle_overlap.py.
    node = NodeProcess(tmp_path, receiver.url, {"worker": {"max_restarts": 0, "overlap": "never"}}).start()
    try:
        pid = node.worker_pid()
        await start_long_job(http, node, "usr1-1")
        node.signal(signal.SIGUSR1)
        (callback,) = await receiver.await_callback("usr1-1")
        assert callback.fields["status"] == "succeeded"  # the job was not cut short
        exited = await asyncio.to_thread(node.wait_event, "worker_exited", pid=pid)
        assert exited["reason"] == "recycle" and exited["returncode"] == 0  # it exited by itself
        await asyncio.to_thread(node.wait_ready)
        second = node.worker_pid()
        assert second != pid

        node.signal(signal.SIGUSR1)  # idle: at once
        await asyncio.to_thread(node.wait_event, "worker_exited", pid=second)
        await asyncio.to_thread(node.wait_ready)
        assert node.process.poll() is None
        # A recycle is routine: INFO, not among the restarts /gpu/status counts (those are
        # unplanned), but counted in the metric under its own label.
        assert node.gpu_status()["worker"]["restarts"] == 0
        families = scrape(node)
        assert value(families, "gpu_server_worker_restarts", "gpu_server_worker_restarts_total", reason="recycle") == 2
        restarting = node.events("worker_restarting")
        assert [(e["reason"], e["level"]) for e in restarting] == [("recycle", "INFO")] * 2
        status, _, body = await submit(http, node.base_url, tryon_form("usr1-after"))
        assert status == 202, body
        (callback,) = await receiver.await_callback("usr1-after")
        assert callback.fields["status"] == "succeeded"
    finally:
        assert node.stop() == 0, node.tail()


async def test_sigquit_stops_at_once_even_mid_job_and_leaves_no_process(tmp_path, receiver, http):
    node = NodeProcess(tmp_path, receiver.url, {"shutdown": {"drain_timeout_s": 600}}).start()
    worker = node.worker_pid()
    await start_long_job(http, node, "quit-1")
    node.signal(signal.SIGQUIT)
    # Well before the 600 s drain a TERM would grant.
    assert await asyncio.to_thread(node.wait_exit, 30) == 0, node.tail()
    assert await asyncio.to_thread(wait_gone, worker, 5)
    assert node.events("shutdown_started")[0]["signal"] == "SIGQUIT"
