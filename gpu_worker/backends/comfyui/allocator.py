"""PyTorch's CUDA allocator for the ComfyUI worker: cudaMallocAsync, as ComfyUI's own start
chooses it (`model.comfyui.cuda_malloc`, on by default).

ComfyUI's `main.py` sets PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync (its `cuda_malloc.py`)
before it imports torch; an embedder has to do the same itself. A CUDA build of torch picks
its allocator backend from the variable when its CUDA library loads, at `import torch`, so
this runs when the backend is made, before anything of torch is imported in the worker.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping, NamedTuple

ENV = "PYTORCH_CUDA_ALLOC_CONF"
ASYNC = "backend:cudaMallocAsync"


class Allocator(NamedTuple):
    conf: str | None  # PYTORCH_CUDA_ALLOC_CONF in force; None: torch's own default
    source: str  # "operator" (set before the worker started), "node", or "default"
    too_late: bool  # torch was imported already: the variable may not take effect


def choose(wanted: bool, device: str, environ: MutableMapping[str, str] = os.environ) -> Allocator:
    """Set cudaMallocAsync for this process unless the operator chose an allocator
    configuration (kept as it is), it is turned off, or the device is the CPU."""
    too_late = "torch" in sys.modules
    operator = environ.get(ENV)
    if operator is not None:
        return Allocator(operator, "operator", too_late)
    if not wanted or device == "cpu":
        return Allocator(None, "default", too_late)
    environ[ENV] = ASYNC
    return Allocator(ASYNC, "node", too_late)
