"""What a config reload (SIGHUP) changes, and what each change needs.

Most settings apply at once (tokens, limits, the callback, timeouts, the log level).
Settings the worker was spawned with need a fresh worker: a recycle after the current
job. A few need the process itself restarted (the listening socket, the node's identity,
where results are kept): they are kept as they were, and the log says so.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from supervisor.config import Config

# Keys (dotted prefixes) that only a restart of the node applies.
RESTART_ONLY = ("node_id", "server", "spool.dir")
# Keys the worker process is spawned with: changing one recycles the worker.
WORKER_SPAWN = (
    "worker.backend",
    "worker.device",
    "worker.heartbeat_interval_s",
    "model",
    "images.max_pixels",
)


class ReloadPlan(NamedTuple):
    changed: list[str]  # every changed key, dotted
    applied: Config  # the new config, less what needs a restart
    recycle_worker: bool
    needs_restart: list[str]  # changed keys kept at their old values


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    changed = sorted(_changed_keys(_flatten(old), _flatten(new)))
    needs_restart = [key for key in changed if _under(key, RESTART_ONLY)]
    applied = msgspec.structs.replace(
        new,
        node_id=old.node_id,
        server=old.server,
        spool=msgspec.structs.replace(new.spool, dir=old.spool.dir),
    )
    recycle = any(_under(key, WORKER_SPAWN) for key in changed)
    return ReloadPlan(changed, applied, recycle, needs_restart)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _flatten(config: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        else:
            flat[path] = value

    walk(msgspec.to_builtins(config), "")
    return flat


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    return {key for key in old.keys() | new.keys() if old.get(key, _MISSING) != new.get(key, _MISSING)}


_MISSING = object()
