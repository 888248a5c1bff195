"""Driving ComfyUI's engine in this process: import, device, model folders, one executor.

Only this module imports ComfyUI. It works with the vendored 0.3.75 engine and current
upstream: it uses the executor, `validate_prompt`, `interrupt_current_processing` and
`folder_paths`, which both have, and reads results from the executor's status messages.

Import-order traps it takes care of (see docs/comfyui.md):
- the ComfyUI root goes first on sys.path: it owns top-level names such as `utils`,
  `nodes`, `execution`, `app`, `server`;
- its `utils` package is imported before `nodes` (0.3.75 puts `comfy/` on sys.path, and a
  later `import utils` would find `comfy/utils.py`);
- the engine's start-up options (`options`) and the device are set in
  `comfy.cli_args.args` before `comfy.model_management` is imported: it reads them then.

It also does, in place of ComfyUI's own `main.py`: the executor's cache type from the
options, the custom node packs (`custom_nodes`), a stand-in for the web server that
nodes reach as `PromptServer.instance`, and between jobs what `main.py`'s job loop
releases (`release`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from comfyui_config import engine as comfyui_engine
from gpu_worker.backends.comfyui import custom_nodes as comfyui_custom_nodes, optional as comfyui_optional
from gpu_worker.backends.comfyui import options as comfyui_options, shapes as comfyui_shapes, workdir as comfyui_workdir

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
    return comfyui_engine.read_version(root)


class ComfyUIRuntime:
    def __init__(
        self, root: str, device: str, models_dir: str | None, extra_model_paths: str | None,
        options: Mapping[str, Any] | None = None, custom_node_folders: list[str] | None = None,
        key: str = "model.comfyui",
    ) -> None:
        self.root = Path(root)
        self.wanted_device = device
        self.models_dir = models_dir
        self.extra_model_paths = extra_model_paths
        self.options = dict(options or {})
        self.custom_node_folders = custom_node_folders  # None: no packs; []: the root's only
        self.key = key  # where the settings are in the config, for messages
        self.engine = comfyui_engine.info(self.root)  # version and commit, from its files
        self.version = self.engine.version
        self.device = "cpu"
        self.executor: Any = None
        self.stand_ins: list[str] = []
        self.fixups: list[str] = []  # options set as the engine's main.py sets them after parsing
        self.autotune_set = False  # cudnn's benchmark turned on here for `fast: autotune`
        self.cache: comfyui_shapes.CacheChoice | None = None  # packages the engine imports that are served by stand-ins
        self.packs: list[comfyui_custom_nodes.PackOutcome] = []
        self._server = _Silent()
        self._nodes: Any = None
        self._folder_paths: Any = None
        self._execution: Any = None
        self._mm: Any = None
        self._cli_args: Any = None
        self._hook_breaker: Any = None
        self._work_dir: str | None = comfyui_workdir.make()

    # --- start-up --------------------------------------------------------------------

    def start(self, extra_nodes: Mapping[str, type]) -> None:
        """Import the engine, initialise its built-in nodes (and packs) once, register ours."""
        root = str(self.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        self._apply_options()  # argparse only so far: a bad option fails before torch loads
        missing = comfyui_optional.missing_required(root)
        if missing:
            raise EngineStartError("; ".join(missing))
        import torch

        self.stand_ins = comfyui_optional.install()
        args = self._cli_args.args
        self.device = self._choose_device(torch, args)
        importlib.import_module("utils.extra_config")  # before `nodes`: see the module doc
        import folder_paths

        self._set_folders(folder_paths)
        self._folder_paths = folder_paths
        import comfy.model_management as mm
        import execution
        import nodes
        import server

        if getattr(server.PromptServer, "instance", None) is None:
            # Nodes and packs reach the web server as PromptServer.instance (progress text,
            # messages to the UI, routes at import); none is started here.
            server.PromptServer.instance = self._server
        self._init_nodes(nodes, folder_paths)
        nodes.NODE_CLASS_MAPPINGS.update(extra_nodes)
        self._nodes, self._execution, self._mm = nodes, execution, mm
        self.autotune_set = comfyui_shapes.apply_autotune(args, torch)
        # One executor for the life of the worker: its caches keep loader outputs (the
        # weights) between jobs. The cache type as the engine's own job loop picks it from
        # the options (`shapes.choose_cache`: cache_ram a number or a list).
        cache = comfyui_shapes.choose_cache(args)
        self.cache = cache
        self.executor = execution.PromptExecutor(
            self._server, cache_type=getattr(execution.CacheType, cache.kind), cache_args=cache.args,
        )

    def find_model(self, folder: str, name: str) -> str | None:
        """Where the engine finds a model file of one of its folders (None: nowhere)."""
        return self._folder_paths.get_full_path(folder, name)

    def engine_options(self) -> dict[str, Any]:
        """The engine's start-up options in force now: each one that differs from its default."""
        return comfyui_options.in_force(self._cli_args.parser, self._cli_args.args)

    def _apply_options(self) -> None:
        if "comfy.model_management" in sys.modules:
            raise EngineStartError("the engine was imported before its options could be set (one engine per process)")
        from comfy import cli_args

        self._cli_args = cli_args
        try:
            comfyui_options.apply(self.options, cli_args.parser, cli_args.args, self.key)
        except comfyui_options.OptionsError as exc:
            raise EngineStartError("; ".join(exc.problems)) from None
        # What the engine's own main.py sets after parsing (it never runs embedded).
        self.fixups = comfyui_shapes.post_parse_fixups(cli_args.args)
        missing = comfyui_options.missing_packages(self.options, self.key)
        if missing:
            raise EngineStartError("; ".join(missing))

    def _init_nodes(self, nodes, folder_paths) -> None:
        """The built-in extra nodes and, when asked for, the packs, as `main.py` does it:
        functions a pack may hook (the hook breaker's list) are put back afterwards."""
        packs = self.custom_node_folders is not None
        if packs:
            comfyui_custom_nodes.add_folders(folder_paths, self.custom_node_folders or [])
        try:
            self._hook_breaker = importlib.import_module("hook_breaker_ac10a0")
            self._hook_breaker.save_functions()
        except ImportError:  # an engine without one
            self._hook_breaker = None
        with comfyui_custom_nodes.recording(nodes) as outcomes:
            # Async in these versions; no loop runs in this thread yet.
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=packs, init_api_nodes=False))
        self.packs = list(outcomes)
        self._restore_hooked()

    def _restore_hooked(self) -> None:
        if self._hook_breaker is not None:
            self._hook_breaker.restore_functions()

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
        assert self._work_dir is not None
        def folder(name: str) -> str:
            path = Path(self._work_dir) / name  # type: ignore[arg-type]
            path.mkdir(exist_ok=True)
            return str(path)

        comfyui_shapes.set_folders(folder_paths, folder)
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

    def settle(self) -> None:
        """Once loaded and warmed up: what lives as long as the worker (modules, models, the
        executor) is set aside from the garbage collector, so the collections between jobs
        walk only what jobs made (gc.freeze; walking the engine's objects too took ~0.4 s of
        CPU per collection in the CI worker)."""
        gc.collect()
        gc.freeze()

    def release(self) -> None:
        """What ComfyUI's own job loop (`main.py`, `prompt_worker`) does between jobs: collect
        garbage, hand the allocator's cached blocks back, undo what packs hooked."""
        gc.collect()
        self._mm.soft_empty_cache()
        self._restore_hooked()

    def close(self) -> None:
        """At the worker's exit: its per-start folder goes."""
        comfyui_workdir.remove(self._work_dir)
        self._work_dir = None


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
        from aiohttp import web

        self.node_times: dict[str, list[float]] = {}  # node id -> [started, finished]
        # For packs that add web routes when imported (never served here).
        self.routes = web.RouteTableDef()

    def send_progress_text(self, text, node_id, sid=None) -> None:
        pass  # a node's text for the UI (GetImageSize's size, say): nobody to show it to

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
