"""Driving ComfyUI's engine in this process: import, device, model folders, one executor.

Only this module imports ComfyUI. It works with the vendored 0.3.75 engine and current
upstream: it uses the executor, `validate_prompt`, `interrupt_current_processing` and
`folder_paths`, which both have, and reads results from the executor's status messages.

Import-order traps it takes care of (see the README's ComfyUI section):
- the ComfyUI root goes first on sys.path: it owns top-level names such as `utils`,
  `nodes`, `execution`, `app`, `server`;
- its `utils` package is imported before `nodes` (0.3.75 puts `comfy/` on sys.path, and a
  later `import utils` would find `comfy/utils.py`);
- the device is chosen in `comfy.cli_args.args` before `comfy.model_management` is imported.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from gpu_worker.backends import comfyui_optional

# Exception types that mean out of memory, as the engine reports them (module.qualname).
OOM_TYPES = frozenset({"torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError", "MemoryError"})
# How often a cancelled job's interrupt is asserted again while the graph runs: the engine
# clears the flag when a prompt starts, so one early interrupt could be lost.
INTERRUPT_REPEAT_S = 0.05


class EngineStartError(Exception):
    pass


class GraphResult(NamedTuple):
    success: bool
    interrupted: bool
    cached_nodes: list[str]
    error: dict | None  # the engine's execution_error message
    execution_s: float
    node_seconds: dict[str, float]  # node id -> seconds, for each node that ran (not cached)


def comfyui_version(root: Path) -> str | None:
    """The version the checkout declares (comfyui_version.py), without importing it."""
    try:
        text = (root / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else None


class ComfyUIRuntime:
    def __init__(self, root: str, device: str, models_dir: str | None, extra_model_paths: str | None) -> None:
        self.root = Path(root)
        self.wanted_device = device
        self.models_dir = models_dir
        self.extra_model_paths = extra_model_paths
        self.version = comfyui_version(self.root)
        self.device = "cpu"
        self.executor: Any = None
        self.stand_ins: list[str] = []  # packages the engine imports that are served by stand-ins
        self._server = _Silent()
        self._nodes: Any = None
        self._execution: Any = None
        self._mm: Any = None
        self._work_dir = tempfile.mkdtemp(prefix="gpu-server-comfyui-")

    # --- start-up --------------------------------------------------------------------

    def start(self, extra_nodes: Mapping[str, type]) -> None:
        """Import the engine, initialise its built-in nodes once, register ours."""
        import torch

        root = str(self.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        self.stand_ins = comfyui_optional.install()
        from comfy.cli_args import args

        self.device = self._choose_device(torch, args)
        importlib.import_module("utils.extra_config")  # before `nodes`: see the module doc
        import folder_paths

        self._set_folders(folder_paths)
        import comfy.model_management as mm
        import execution
        import nodes

        # Async in these versions; no loop runs in this thread yet.
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        nodes.NODE_CLASS_MAPPINGS.update(extra_nodes)
        self._nodes, self._execution, self._mm = nodes, execution, mm
        # One executor for the life of the worker: its caches keep loader outputs (the
        # weights) between jobs. `ram`/`ram_inactive`: keys newer engines read.
        self.executor = execution.PromptExecutor(
            self._server, cache_type=execution.CacheType.CLASSIC,
            cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0},
        )

    def bind_device_to_this_thread(self) -> None:
        """CUDA's current device is per thread, and ComfyUI asks for it on every call: jobs
        (and the frees after an out-of-memory) run in the worker's job thread, not in the
        thread that loaded the engine, so `cuda:N` is set again there."""
        if self.device.startswith("cuda:"):
            import torch

            torch.cuda.set_device(int(self.device.split(":", 1)[1]))

    def _choose_device(self, torch, args) -> str:
        wanted = self.wanted_device
        if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
            args.cpu = True
            return "cpu"
        if not torch.cuda.is_available():
            raise EngineStartError(f"worker.device is {wanted} but CUDA is not available to torch")
        if ":" in wanted:
            index = int(wanted.split(":", 1)[1])
            if index >= torch.cuda.device_count():
                raise EngineStartError(f"worker.device is {wanted} but torch sees {torch.cuda.device_count()} GPU(s)")
            # ComfyUI uses the current CUDA device; set it before model_management reads it.
            torch.cuda.set_device(index)
        return f"cuda:{torch.cuda.current_device()}"

    def _set_folders(self, folder_paths) -> None:
        # The defaults point into the ComfyUI checkout (or site-packages, when vendored).
        for name in ("input", "output", "temp", "user"):
            path = Path(self._work_dir) / name
            path.mkdir(exist_ok=True)
            setter = getattr(folder_paths, f"set_{name}_directory", None)
            if setter is not None:
                setter(str(path))
        if self.models_dir is not None:
            old = folder_paths.models_dir
            folder_paths.models_dir = self.models_dir
            for paths, _extensions in folder_paths.folder_names_and_paths.values():
                paths[:] = [self.models_dir + p[len(old):] if p.startswith(old) else p for p in paths]
        if self.extra_model_paths is not None:
            import utils.extra_config

            utils.extra_config.load_extra_path_config(self.extra_model_paths)
        if hasattr(folder_paths, "filename_list_cache"):
            folder_paths.filename_list_cache.clear()

    # --- the graph -------------------------------------------------------------------

    @property
    def node_types(self) -> Mapping[str, Any]:
        return self._nodes.NODE_CLASS_MAPPINGS

    def validate(self, prompt: dict, outputs: list[str]) -> tuple[dict | None, dict]:
        """The engine's own check of a prompt: (error or None, node errors by node id)."""
        ok, error, _good, node_errors = asyncio.run(
            self._execution.validate_prompt("gpu-server-validate", prompt, outputs)
        )
        return (None if ok else error), node_errors

    def execute(self, prompt: dict, prompt_id: str, outputs: list[str], cancelled: threading.Event) -> GraphResult:
        """Run the graph in this thread (the executor runs its own event loop)."""
        finished = threading.Event()
        watcher = threading.Thread(
            target=self._interrupt_when_cancelled, args=(cancelled, finished), name="interrupt", daemon=True
        )
        watcher.start()
        self.bind_device_to_this_thread()
        self._server.node_times.clear()
        started = time.perf_counter()
        try:
            self.executor.execute(prompt, prompt_id, {}, outputs)
        finally:
            elapsed = time.perf_counter() - started
            finished.set()
            watcher.join()
        cached: list[str] = []
        error = None
        interrupted = False
        for event, data in self.executor.status_messages:
            if event == "execution_cached":
                cached = [str(node) for node in data.get("nodes", [])]
            elif event == "execution_error":
                error = data
            elif event == "execution_interrupted":
                interrupted = True
        success = self.executor.success and error is None and not interrupted
        return GraphResult(success, interrupted, cached, error, elapsed, self._server.node_seconds())

    def _interrupt_when_cancelled(self, cancelled: threading.Event, finished: threading.Event) -> None:
        while not finished.is_set():
            if cancelled.wait(INTERRUPT_REPEAT_S):
                if finished.is_set():
                    return
                self._mm.interrupt_current_processing(True)
                finished.wait(INTERRUPT_REPEAT_S)

    def free_memory(self) -> None:
        self._mm.unload_all_models()
        self._mm.soft_empty_cache()


class _Silent:
    """The executor's view of a server, with nobody listening: no UI client, no sockets.

    Of what the engine sends it, it keeps when each node started and finished: the
    engine's progress handler reports every node's state ("running", then "finished") at
    each change, with or without a UI client, which gives each job's per-node times.
    """

    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata: dict = {}

    def __init__(self) -> None:
        self.node_times: dict[str, list[float]] = {}  # node id -> [started, finished]

    def send_sync(self, event, data, sid=None) -> None:
        if event != "progress_state":
            return
        now = time.perf_counter()
        for node_id, state in (data.get("nodes") or {}).items():
            times = self.node_times.get(node_id)
            if state.get("state") == "running" and times is None:
                self.node_times[node_id] = [now]
            elif state.get("state") == "finished" and times is not None and len(times) == 1:
                times.append(now)  # a cached node finishes without running: not counted

    def node_seconds(self) -> dict[str, float]:
        return {node: times[1] - times[0] for node, times in self.node_times.items() if len(times) == 2}

    def queue_updated(self) -> None:
        pass
