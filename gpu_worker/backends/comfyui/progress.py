"""The ComfyUI backend's progress: the engine's own progress hook, narrowed to the sampler.

ComfyUI has one process-wide hook (`comfy.utils.set_progress_bar_global_hook`); every
`comfy.utils.ProgressBar` calls it as `hook(value, total, preview, node_id=None)`. The
samplers (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced, all through
`latent_preview.prepare_callback`) call it once per step, but so do other nodes with loops
of their own: tiled VAE encode and decode, model upscalers, ... whose counts are not the
job's steps. So the hook asks the engine which node runs now (`get_executing_context()`,
which the executor sets around every node it runs) and passes on only what a sampler node
reports: a node whose class is filed under ComfyUI's sampling category, `sampling` (0.3.75:
`sampling`, `sampling/custom_sampling`, ...) or `model/sampling` (upstream moved the
samplers there: `model/sampling`, `model/sampling/...`). The category is read as a path, so
either engine's samplers pass.

A `ProgressBar` takes the hook when it is made, so the hook is installed once per worker,
at load, before the warm-up run; between jobs (the warm-up included) it reports nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

from gpu_worker import progress

# The category paths samplers are filed under: 0.3.75's, and upstream's.
SAMPLER_CATEGORIES = (("sampling",), ("model", "sampling"))


def is_sampler(node_class: Any) -> bool:
    """A node class filed under a sampler category or below it (`sampling/custom_sampling`,
    `model/sampling/custom`, ...)."""
    category = getattr(node_class, "CATEGORY", None)
    if not isinstance(category, str):
        return False
    path = tuple(part for part in category.strip().split("/") if part)
    return any(path[:len(prefix)] == prefix for prefix in SAMPLER_CATEGORIES)


def sampler_nodes(prompt: Mapping[str, Any], node_types: Mapping[str, Any]) -> frozenset[str]:
    """The ids of the graph's sampler nodes."""
    return frozenset(
        str(node_id) for node_id, node in prompt.items()
        if isinstance(node, Mapping) and is_sampler(node_types.get(node.get("class_type")))
    )


class SamplerProgress:
    def __init__(
        self,
        node_types: Mapping[str, Any],
        executing_context: Callable[[], Any],
        report: Callable[[int, int], None] = progress.report,
    ) -> None:
        self._node_types = node_types
        self._executing_context = executing_context
        self._report = report
        self._prompt_id: str | None = None
        self._samplers: frozenset[str] = frozenset()

    @contextlib.contextmanager
    def watching(self, prompt_id: str, prompt: Mapping[str, Any]) -> Iterator[None]:
        """While this graph runs, its sampler nodes' steps are the job's progress."""
        self._prompt_id, self._samplers = prompt_id, sampler_nodes(prompt, self._node_types)
        try:
            yield
        finally:
            self._prompt_id, self._samplers = None, frozenset()

    def hook(self, value: Any, total: Any, preview: Any = None, *args: Any, node_id: Any = None, **kwargs: Any) -> None:
        """The engine's call, in the engine's thread: only an assignment further on
        (`progress.report`), never an exception into the sampling loop."""
        try:
            context = self._executing_context()
            if context is not None:
                if context.prompt_id != self._prompt_id:
                    return  # not the graph being watched (a warm-up, say)
                node_id = context.node_id
            if node_id is not None and str(node_id) in self._samplers:
                self._report(value, total)
        except Exception:  # progress is a nicety: never the cause of a failed graph
            pass


_installed: SamplerProgress | None = None


def install(node_types: Mapping[str, Any]) -> SamplerProgress:
    """Put the hook in place (once per process; the engine is imported by now)."""
    global _installed
    if _installed is None:
        import comfy.utils

        try:
            from comfy_execution.utils import get_executing_context
        except ImportError:  # an engine that does not tell the running node: nothing passes
            def get_executing_context() -> None:
                return None

        _installed = SamplerProgress(node_types, get_executing_context)
        comfy.utils.set_progress_bar_global_hook(_installed.hook)
    return _installed
