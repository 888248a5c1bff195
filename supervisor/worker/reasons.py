"""Why a worker ended, as data: the supervisor's kill reasons, the restart metric's labels,
the one mapping between them, and the reading of an exit status.

A kill the supervisor made on purpose is told by its reason, never guessed from the status
(a SIGKILL we sent is not "possibly the kernel's out-of-memory killer"); an exit status the
worker chose is read through the wire's exit codes (`ipc.exit_codes`).
"""

from __future__ import annotations

import enum
import signal
from typing import NamedTuple

from ipc.exit_codes import is_permanent, is_startup_failure, meaning


class KillReason(str, enum.Enum):
    """Why the supervisor ended a worker on purpose (asked it to exit, or killed it)."""

    WATCHDOG = "watchdog"  # its job ran past worker.inference_timeout_s
    HEARTBEAT = "heartbeat"  # silent for worker.heartbeat_timeout_s
    START_TIMEOUT = "start_timeout"  # not ready within worker.startup_timeout_s
    PROTOCOL = "protocol"  # out of step with us: an unreadable message, another protocol, a socket gone
    RECYCLE = "recycle"  # USR1, or a reload that changed what the worker is spawned with
    DRAIN_DEADLINE = "drain_deadline"  # the drain ended (its deadline, or a second TERM) with a job running
    QUIT = "quit"  # SIGQUIT: stop now
    STOP = "stop"  # the node stops


class RestartReason(str, enum.Enum):
    """The `reason` label of gpu_server_worker_restarts_total."""

    EXIT = "exit"
    SIGNAL = "signal"
    OOM_KILL = "oom_kill"
    WATCHDOG = "watchdog"
    HEARTBEAT = "heartbeat"
    RECYCLE = "recycle"


# The one mapping. None: the node is stopping, no restart follows.
RESTART_REASON: dict[KillReason, RestartReason | None] = {
    KillReason.WATCHDOG: RestartReason.WATCHDOG,
    KillReason.HEARTBEAT: RestartReason.HEARTBEAT,
    KillReason.START_TIMEOUT: RestartReason.WATCHDOG,
    KillReason.PROTOCOL: RestartReason.WATCHDOG,
    KillReason.RECYCLE: RestartReason.RECYCLE,
    KillReason.DRAIN_DEADLINE: None,
    KillReason.QUIT: None,
    KillReason.STOP: None,
}

# Planned ends: routine, logged at INFO, never counted against the crash-loop limit.
PLANNED = frozenset({KillReason.RECYCLE, KillReason.QUIT, KillReason.STOP})


class ExitReason(NamedTuple):
    reason: str  # a RestartReason's value, or the KillReason's when no restart follows
    description: str
    startup_failed: bool = False  # the worker said (by its status) that it could not start
    permanent: bool = False  # ... for a reason a restart would meet again: no restart follows


def describe_exit(returncode: int, killed_for: KillReason | None = None) -> ExitReason:
    """Read a worker's exit status. `killed_for`: why we ended it, when we did."""
    if returncode >= 0:
        said = meaning(returncode)
        description = f"exited with status {returncode}" + (f" ({said})" if said else "")
    else:
        description = f"killed by {_signal_name(-returncode)}"
    if killed_for is not None:
        label = RESTART_REASON[killed_for]
        return ExitReason(
            label.value if label is not None else killed_for.value,
            f"{description}, ended by the supervisor ({killed_for.value})",
        )
    if returncode >= 0:
        return ExitReason(RestartReason.EXIT.value, description, is_startup_failure(returncode),
                          is_permanent(returncode))
    if -returncode == signal.SIGKILL:
        # Not ours: most often the kernel's OOM killer.
        return ExitReason(
            RestartReason.OOM_KILL.value, f"{description} (possibly the kernel's out-of-memory killer)"
        )
    return ExitReason(RestartReason.SIGNAL.value, description)


def exit_log_level(killed_for: KillReason | None, stopping: bool, startup_failed: bool) -> str:
    """How loud a worker's exit is: routine when planned, an error when it was not."""
    if killed_for is None:
        if stopping:
            return "info"  # it went by itself while the node stops
        return "warning" if startup_failed else "error"  # worker_startup_failed said why
    if killed_for in PLANNED:
        return "info"
    return "warning" if killed_for is KillReason.DRAIN_DEADLINE else "error"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
