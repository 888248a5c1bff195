"""Whether a failed graph ran out of memory, read from the engine's `execution_error` message.

The executor reports a node's exception by its type's full name and its text, not the
exception itself. 0.3.75 counts only torch's OutOfMemoryError; upstream's
`model_management.is_oom` also counts `torch.AcceleratorError` carrying CUDA's
out-of-memory code (the asynchronous allocator's failure surfaces that way, "CUDA error: out
of memory"). Both are out of memory here, whichever engine reported them: the job fails
`out_of_memory` and the worker frees its caches, not `backend_error`.
"""

from __future__ import annotations

from typing import Any, Mapping

OOM_TYPES = frozenset({"torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError", "MemoryError"})
# The accelerator error's own type; out of memory only when its text says so (CUDA's
# cudaErrorMemoryAllocation is "out of memory"; other codes are other failures).
ACCELERATOR_ERROR_TYPES = frozenset({"torch.AcceleratorError", "AcceleratorError"})
OOM_TEXTS = ("out of memory", "cudaerrormemoryallocation")


def is_out_of_memory(error: Mapping[str, Any] | None) -> bool:
    if not error:
        return False
    kind = str(error.get("exception_type") or "")
    if kind in OOM_TYPES or kind.endswith("OutOfMemoryError"):
        return True
    if kind in ACCELERATOR_ERROR_TYPES or kind.endswith(".AcceleratorError"):
        text = str(error.get("exception_message") or "").lower()
        return any(marker in text for marker in OOM_TEXTS)
    return False
