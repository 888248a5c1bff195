"""Whether a recycle may load the next worker beside the current one: `worker.overlap`.

Pure logic on figures the shell measured (`memory_probe`): the current worker's footprint
and the free memory of the same kind (GPU memory by NVML for a CUDA worker, RAM for a CPU
one). `auto` overlaps only when the free memory exceeds the footprint plus
`worker.overlap_margin_bytes`: two copies of the model must fit, with room to spare for
the current worker's next job. Without figures it does not overlap: a guess that is wrong
costs an out-of-memory in the worker that serves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

GiB = 1024**3


class OverlapMode(str, enum.Enum):
    AUTO = "auto"  # overlap where the measured memory allows
    ALWAYS = "always"
    NEVER = "never"  # recycle as before: the node is out of service until the new worker is ready


class OverlapResult(str, enum.Enum):
    """The `result` label of gpu_server_worker_overlap_total."""

    SWITCHED = "switched"  # the next worker took over with no gap
    FELL_BACK = "fell_back"  # `auto` found too little free memory: recycled as before
    FAILED = "failed"  # the next worker could not load: the current one goes on serving


@dataclass(frozen=True)
class MemoryFigures:
    """What the shell measured for a decision; `error` when it could not."""

    memory: str  # "gpu" or "ram": what both figures are of
    footprint_bytes: int | None  # the current worker's
    free_bytes: int | None
    source: str = ""  # how the footprint was found (the worker's own process, or a bound)
    error: str | None = None

    @classmethod
    def unknown(cls, memory: str, error: str) -> MemoryFigures:
        return cls(memory, None, None, error=error)


class Decision(NamedTuple):
    overlap: bool
    why: str


def decide(figures: MemoryFigures, margin_bytes: int) -> Decision:
    """`auto`'s decision: overlap only when the free memory exceeds footprint + margin."""
    footprint, free = figures.footprint_bytes, figures.free_bytes
    if figures.error is not None or footprint is None or free is None:
        return Decision(False, f"no {figures.memory} figures to judge by ({figures.error or 'not measured'})")
    need = footprint + margin_bytes
    judged = (
        f"free {figures.memory} memory {_gib(free)} against the current worker's {_gib(footprint)} "
        f"plus the margin {_gib(margin_bytes)} = {_gib(need)}"
    )
    if free > need:
        return Decision(True, judged)
    return Decision(False, judged)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"
