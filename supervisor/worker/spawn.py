"""Starting a worker process and ending its process group: the spec it is started with,
its environment, its own process group and session.

A worker runs in its own process group (and session): killing the group leaves nothing
behind, and a Ctrl-C on the supervisor's terminal reaches only the supervisor, which then
drains. The spec carries no secret, and neither does the environment the worker inherits:
deployments hand the tokens to the supervisor as environment variables (`${VAR}`), and the
worker runs the engine and whatever custom nodes it loads, none of which needs one. (The
same user can still read the supervisor's own /proc entries: this keeps the secrets out of
the worker's reach by accident, e.g. an environment dump, not out of a determined process.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Mapping, Sequence

from ipc.messages import SPEC_ENV, WorkerSpec, encode_spec
from ipc.redaction import redact_urls
from supervisor.config import Config, LoadedConfig

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


# An environment value this long or longer that is part of a secret (`Bearer ${VAR}`, a URL
# with a credential in it) goes too; shorter ones (`/tmp`, `1`) are too common to judge by.
PART_OF_A_SECRET_MIN = 8


def secrets_of(config: Config) -> set[str]:
    """The values of the config that are secret: tokens, the signing secret, and the URLs
    that carry a credential (`user:password@`, a query string: what the logs mask)."""
    urls = [url for url in (config.callback.url, config.events.url) if url and redact_urls(url) != url]
    values = [*config.auth.tokens, config.callback.token, config.callback.signing_secret, config.events.token,
              config.metrics.token, *urls]
    return {value for value in values if value}


def worker_environ(config: Config, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The supervisor's environment less every variable that holds a secret of `config`."""
    secrets = secrets_of(config)

    def secret(value: str) -> bool:
        return value in secrets or (
            len(value) >= PART_OF_A_SECRET_MIN and any(value in s for s in secrets)
        )

    return {name: value for name, value in environ.items() if not secret(value)}


async def spawn(command: Sequence[str], spec: WorkerSpec, environ: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start the worker with `environ` (`worker_environ`: no secret in it) and its spec."""
    env = {**environ, SPEC_ENV: encode_spec(spec), "PYTHONUNBUFFERED": "1"}
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
