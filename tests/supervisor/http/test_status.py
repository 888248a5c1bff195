from __future__ import annotations

import pytest

from supervisor.http.status import readiness
from supervisor.worker.state import WorkerState as S


@pytest.mark.parametrize(
    "state, draining, expected",
    [
        (S.READY, False, "ok"),
        (S.BUSY, False, "ok"),
        (S.STARTING, False, "loading"),
        (S.STOPPED, False, "loading"),
        (S.RESTARTING, False, "restarting"),
        (S.FAILED, False, "failed"),
        (S.READY, True, "draining"),
        (S.RESTARTING, True, "draining"),
    ],
)
def test_readiness(state, draining, expected):
    assert readiness(state, draining) == expected


def test_gpu_status_lists_gpus_in_the_documented_shape():
    from pathlib import Path
    from types import SimpleNamespace

    import yaml

    from supervisor.gpu.nvml import GpuStats
    from supervisor.http.status import gpu_status_body

    node = SimpleNamespace(
        config=SimpleNamespace(node_id="n1"),
        scheduler=SimpleNamespace(current=None, busy=False, queue_length=0, max_pending=0),
        worker=SimpleNamespace(state=S.READY, pid=42, restarts=0, model_loaded=True, next_worker=None),
    )
    gpu = GpuStats(1, "NVIDIA H100", "GPU-1", 0.5, 2**30, 80 * 2**30, 50.0, None)
    assert gpu_status_body(node)["gpus"] == []
    (body,) = gpu_status_body(node, [gpu])["gpus"]
    spec = yaml.safe_load((Path(__file__).resolve().parents[3] / "supervisor" / "http" / "openapi.yaml").read_text())
    item = spec["components"]["schemas"]["GpuStatus"]["properties"]["gpus"]["items"]
    assert set(body) == set(item["required"]) == set(item["properties"])
    assert body["index"] == 1 and body["uuid"] == "GPU-1" and body["power_watts"] is None
    status = spec["components"]["schemas"]["GpuStatus"]
    assert set(gpu_status_body(node)) == set(status["required"]) == set(status["properties"])


def test_gpu_status_tells_the_running_jobs_last_step_only():
    import time
    from types import SimpleNamespace

    from supervisor.jobs.job import Job, JobOptions
    from supervisor.http.status import gpu_status_body

    job = Job("j1", "u", "s", "qwen", JobOptions(), b"p", b"g", time.monotonic())
    node = SimpleNamespace(
        config=SimpleNamespace(node_id="n1"),
        scheduler=SimpleNamespace(current=job, busy=True, queue_length=0, max_pending=0),
        worker=SimpleNamespace(state=S.BUSY, pid=42, restarts=0, model_loaded=True, next_worker=None),
    )
    assert gpu_status_body(node)["current_job_progress"] is None  # queued: not started
    job.mark_handed(time.monotonic(), "m")
    job.mark_model_started(time.monotonic())
    assert gpu_status_body(node)["current_job_progress"] is None  # running, no step yet
    job.mark_progress(3, 8)
    assert gpu_status_body(node)["current_job_progress"] == {"step": 3, "total": 8}
    node.scheduler.current = None
    assert gpu_status_body(node)["current_job_progress"] is None


def test_gpu_status_shows_the_next_worker_of_a_recycle_in_the_documented_shape():
    from pathlib import Path
    from types import SimpleNamespace

    import yaml

    from supervisor.http.status import gpu_status_body

    next_worker = {"state": "starting", "pid": 43}
    node = SimpleNamespace(
        config=SimpleNamespace(node_id="n1"),
        scheduler=SimpleNamespace(current=None, busy=False, queue_length=0, max_pending=0),
        worker=SimpleNamespace(state=S.READY, pid=42, restarts=0, model_loaded=True, next_worker=next_worker),
    )
    worker = gpu_status_body(node)["worker"]
    assert worker["state"] == "ready" and worker["next"] == {"state": "starting", "pid": 43}
    spec = yaml.safe_load((Path(__file__).resolve().parents[3] / "supervisor" / "http" / "openapi.yaml").read_text())
    schema = spec["components"]["schemas"]["GpuStatus"]["properties"]["worker"]
    assert set(worker) == set(schema["required"]) == set(schema["properties"])
    shape = schema["properties"]["next"]["oneOf"][1]
    assert set(worker["next"]) == set(shape["required"])
    assert worker["next"]["state"] in shape["properties"]["state"]["enum"]
