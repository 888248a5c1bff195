"""The bodies of /health, /gpu/status and /version, built from the node's parts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from supervisor.jobs.job import JobState, progress_body
from supervisor.gpu.nvml import GpuStats
from supervisor.worker.state import SERVING, WorkerState

if TYPE_CHECKING:
    from supervisor.http.services import NodeServices

_NOT_SERVING = {
    WorkerState.STARTING: "loading",
    WorkerState.STOPPED: "loading",
    WorkerState.RESTARTING: "restarting",
    WorkerState.FAILED: "failed",
}


def readiness(worker_state: WorkerState, draining: bool) -> str:
    """`ok`, or what keeps the node from taking jobs: loading, restarting, failed, draining."""
    if worker_state is WorkerState.FAILED:
        return "failed"  # says why the node is going, more than `draining` would
    if draining:
        return "draining"
    if worker_state in SERVING:
        return "ok"
    return _NOT_SERVING[worker_state]


def health_body(node: NodeServices, status: str) -> dict[str, Any]:
    ready = node.worker.last_ready
    return {
        "status": status,
        "node_id": node.config.node_id,
        "model_loaded": node.worker.model_loaded,
        "gpu_available": bool(ready and ready.device.startswith("cuda")),
        "worker_state": node.worker.state.value,
    }


def gpu_status_body(node: NodeServices, gpus: Sequence[GpuStats] = ()) -> dict[str, Any]:
    scheduler = node.scheduler
    current = scheduler.current
    running = current is not None and current.state is JobState.RUNNING
    return {
        "node_id": node.config.node_id,
        "busy": scheduler.busy,
        "current_job_id": current.job_id if current is not None else None,
        "queue_length": scheduler.queue_length,
        "queue_capacity": scheduler.max_pending,
        "worker": {
            "state": node.worker.state.value,
            "pid": node.worker.pid,
            "restarts": node.worker.restarts,
            "model_loaded": node.worker.model_loaded,
            # A recycle with overlap: the worker loading beside this one, {state, pid}, else null.
            "next": node.worker.next_worker,
        },
        # The running job's last step; null before its first step and between jobs.
        "current_job_progress": progress_body(current.progress if running else None),
        # From NVML (read off the event loop by the route); [] where there is no driver.
        "gpus": [gpu.as_dict() for gpu in gpus],
    }


def version_body(node: NodeServices) -> dict[str, Any]:
    ready = node.worker.last_ready
    return {
        "node_id": node.config.node_id,
        "version": node.version,
        "git_commit": node.git_commit,
        "backend": node.config.worker.backend,
        "model_version": ready.model_version if ready else node.config.model.version,
        "torch": ready.torch_version if ready else None,
        "comfyui": ready.comfyui_version if ready else None,
        "comfyui_commit": ready.comfyui_commit if ready else None,
        "engine_tested": ready.engine_tested if ready else None,
        "engine_options": ready.engine_options if ready else None,
        "gpu_compute_capability": ready.gpu_compute_capability if ready else None,
    }
