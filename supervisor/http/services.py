"""What the HTTP surface reads of the node: the seam between the routes and the process.

`supervisor.node.Node` has all of it; nothing here imports the node (the node builds the
app, so the app naming the node would be an import circle), and the routes can be built
over any object that has these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from supervisor.config import Config
    from supervisor.gpu.nvml import Nvml
    from supervisor.gpu.selection import GpuRef
    from supervisor.http.auth import TokenSet
    from supervisor.http.jobs_api import JobsApi
    from supervisor.jobs.admission import Admission
    from supervisor.jobs.scheduler import Scheduler
    from supervisor.metrics.registry import Metrics
    from supervisor.worker.shell import WorkerSupervisor


class NodeServices(Protocol):
    """Read at each request, never kept: a reload (SIGHUP) replaces `config`."""

    config: Config
    version: str
    git_commit: str
    metrics: Metrics
    tokens: TokenSet  # X-Internal-Auth
    metrics_tokens: TokenSet  # /metrics, when metrics.token is set
    admission: Admission
    jobs_api: JobsApi
    scheduler: Scheduler
    worker: WorkerSupervisor
    nvml: Nvml

    def readiness(self) -> str:
        """`ok`, or what keeps the node from taking jobs (`status.readiness`)."""
        ...

    def worker_gpus(self) -> list[GpuRef]:
        """The GPUs the worker computes on, for /gpu/status."""
        ...
