"""Starting a worker process and ending its process group: the spec it is started with,
its environment, its own process group and session.

A worker runs in its own process group (and session): killing the group leaves nothing
behind, and a Ctrl-C on the supervisor's terminal reaches only the supervisor, which then
drains. The spec carries no secret: the worker never sees auth or callback tokens.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Sequence

from ipc.messages import SPEC_ENV, WorkerSpec, encode_spec
from supervisor.config import LoadedConfig

WORKER_COMMAND = (sys.executable, "-m", "gpu_worker")


def worker_spec(loaded: LoadedConfig, worker_id: str, endpoint: str) -> WorkerSpec:
    """Everything the worker needs to start, from the settings in force now."""
    cfg = loaded.config
    return WorkerSpec(
        worker_id=worker_id,
        endpoint=endpoint,
        parent_pid=os.getpid(),
        node_id=cfg.node_id,
        backend=cfg.worker.backend,
        device=cfg.worker.device,
        heartbeat_interval_s=cfg.worker.heartbeat_interval_s,
        max_pixels=cfg.images.max_pixels,
        log_level=cfg.logging.level,
        model_version=cfg.model.version,
        backend_settings=cfg.backend_settings(),
        config_dir=str(loaded.base_dir),
    )


async def spawn(command: Sequence[str], spec: WorkerSpec) -> asyncio.subprocess.Process:
    env = {**os.environ, SPEC_ENV: encode_spec(spec), "PYTHONUNBUFFERED": "1"}
    return await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # own process group; no terminal signals
    )


def kill_group(pgid: int) -> None:
    """SIGKILL the worker and anything it started (its group)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
