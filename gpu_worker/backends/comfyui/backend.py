"""The `comfyui` backend: a ComfyUI workflow (Qwen-Image-Edit in production) run in the worker.

Load: settings checked (`comfyui_config.settings`; made with the backend, which also chooses the
CUDA allocator before torch loads: `allocator`), engine started once with its
options and custom node packs (`runtime`), the workflow and the config's mapping
checked against the engine's node types and then by the engine itself (which also finds
model files that are not on disk), and, unless turned off, one warm-up run so the weights
are loaded and resident before the node says ready.

Run, in three stages (prepare: decode the images; model: shape the workflow for the job
(`comfyui_config.workflow`) and execute it on
the long-lived executor (its caches keep every loader's output, so no job reloads weights),
read the image our capture node took; finish: resize and encode it). Inference time is the
graph execution only.
The sampler's steps are the job's progress (`progress`).
"""

from __future__ import annotations

import threading
import time
import uuid

from gpu_worker import imaging
from comfyui_config import engine as comfyui_engine, settings as comfyui_settings, workflow as comfyui_workflow
from gpu_worker.backends.comfyui import allocator as comfyui_allocator, checkpoint as comfyui_checkpoint
from gpu_worker.backends.comfyui import progress as comfyui_progress
from comfyui_config.models import MODEL_FILE_SUFFIXES
from gpu_worker.backends.comfyui.oom import is_out_of_memory
from gpu_worker.backends.comfyui.runtime import ComfyUIRuntime, GraphResult
from comfyui_config.settings import ComfyUISettings
from comfyui_config.workflow import OUTPUT_NODE_ID, JobKeys, WorkflowError
from gpu_worker.engine import (
    BackendContext,
    JobCancelled,
    JobError,
    JobInputs,
    JobOutput,
    LoadInfo,
    StagedRun,
    compute_capability,
)
from ipc.jsonlog import EventLog

events = EventLog("gpu_worker.comfyui")
WARMUP_SIZE = (512, 512)


class GraphOutOfMemory(MemoryError):
    """Out of memory inside a node; the engine fails the job with out_of_memory and frees memory."""


class ComfyUIBackend(StagedRun):
    # Where the settings live in the config, for error messages (a subclass loaded by
    # import path gets `model.custom`).
    SETTINGS_KEY = comfyui_settings.DEFAULT_KEY

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.settings: ComfyUISettings = comfyui_settings.parse(context.settings, context.config_dir, self.SETTINGS_KEY)
        # Now, before anything imports torch: a CUDA torch picks its allocator as it loads.
        allocator = comfyui_allocator.choose(self.settings.cuda_malloc, context.device)
        (events.warning if allocator.too_late else events.info)(
            "comfyui_cuda_allocator", conf=allocator.conf, source=allocator.source, too_late=allocator.too_late)
        self.workflow: dict = {}
        self.runtime: ComfyUIRuntime | None = None
        self.exchange = None
        self.progress: comfyui_progress.SamplerProgress | None = None

    # --- load --------------------------------------------------------------------------

    def load(self) -> LoadInfo:
        from gpu_worker.backends.comfyui import nodes as comfyui_nodes

        self.workflow = comfyui_workflow.load(self.settings.workflow)
        self.runtime = ComfyUIRuntime(
            self.settings.path, self.context.device, self.settings.models_dir, self.settings.extra_model_paths,
            options=self.settings.options, custom_node_folders=self.settings.custom_node_folders,
            key=self.SETTINGS_KEY,
        )
        self.exchange = comfyui_nodes.Exchange()
        self.runtime.start({**comfyui_nodes.node_classes(self.exchange), **self.extra_nodes()})
        if self.runtime.stand_ins:
            events.info("comfyui_stand_ins", packages=self.runtime.stand_ins,
                        note="not installed; the engine's nodes that need them fail when used")
        self._report_packs()
        self._report_engine()
        self.engine_started()
        # Before the workflow is validated or any weight read: a model this engine would
        # run degraded is refused (the header only; `checkpoint`), an exit not retried.
        comfyui_checkpoint.refuse_unrunnable(
            self.workflow, comfyui_checkpoint.abilities(self.runtime.root, self.runtime.version, self.runtime.node_types),
            self.runtime.find_model)
        self.progress = comfyui_progress.install(self.runtime.node_types)  # before any graph runs
        self._check_workflow()
        if not comfyui_progress.sampler_nodes(self.workflow, self.runtime.node_types):
            events.warning("comfyui_no_sampler_progress", workflow=self.settings.workflow,
                           note="no node of the workflow is filed under a sampler category: jobs report no steps")
        if self.settings.warmup:
            self._warm_up()
        self.runtime.settle()
        import torch

        return LoadInfo(
            backend="comfyui",
            model_version=f"comfyui:{self.workflow_name}",
            device=self.runtime.device,
            torch_version=str(torch.__version__),
            comfyui_version=self.runtime.version,
            comfyui_commit=self.runtime.engine.commit,
            engine_tested=self.runtime.engine.tested,
            engine_options=self.runtime.engine_options(),
            gpu_compute_capability=compute_capability(self.runtime.device),
        )

    def _report_packs(self) -> None:
        """Each custom node pack that failed to import, by name (the engine only logs them)."""
        assert self.runtime is not None
        if self.settings.custom_node_folders is None:
            return
        packs = self.runtime.packs
        for pack in packs:
            if not pack.loaded:
                events.error("comfyui_custom_node_failed", pack=pack.name, path=pack.path, error=pack.error)
        events.info("comfyui_custom_nodes", folders=self.settings.custom_node_folders,
                    loaded=[p.name for p in packs if p.loaded], failed=[p.name for p in packs if not p.loaded])

    def _report_engine(self) -> None:
        """The engine's version and commit, and a WARNING for one this node is not tested with."""
        assert self.runtime is not None
        engine = self.runtime.engine
        untested = comfyui_engine.untested_warning(engine)
        if untested:
            events.warning("comfyui_engine_untested", version=engine.version, commit=engine.commit,
                           tested=sorted(comfyui_engine.TESTED), difference=untested)
        events.info("comfyui_engine", version=engine.version, commit=engine.commit, tested=engine.tested,
                    cache=self.runtime.cache.kind if self.runtime.cache else None, fixups=self.runtime.fixups,
                    autotune_set=self.runtime.autotune_set)

    @property
    def workflow_name(self) -> str:
        assert self.settings is not None
        name = self.settings.workflow.rsplit("/", 1)[-1]
        return name[:-5] if name.endswith(".json") else name

    def extra_nodes(self) -> dict[str, type]:
        """More node classes to register at start (a subclass's hook; tests use it)."""
        return {}

    def engine_started(self) -> None:
        """Called once the engine is imported and its nodes registered, before the workflow
        is checked or run (a subclass's hook; the tests shrink the Qwen model there)."""

    def _check_workflow(self) -> None:
        assert self.settings is not None and self.runtime is not None
        problems = comfyui_workflow.check(self.workflow, self.settings, self.runtime.node_types, self.SETTINGS_KEY)
        if not problems:
            # The engine's own check: links, value ranges, choices, and model files (a
            # loader's file name must be one the engine finds in its model folders).
            prompt = comfyui_workflow.job_prompt(self.workflow, self.settings, JobKeys("p", "g", "o"))
            error, node_errors = self.runtime.validate(prompt, [OUTPUT_NODE_ID])
            problems = self._describe_validation(prompt, error, node_errors)
        if problems:
            failed = [f"{p.name} ({p.error})" for p in self.runtime.packs if not p.loaded]
            if failed:
                problems.append(f"custom node packs that failed to import: {'; '.join(failed)}")
            raise WorkflowError([f"workflow {self.settings.workflow}:"] + [f"  {p}" for p in problems])

    def _describe_validation(self, prompt: dict, error: dict | None, node_errors: dict) -> list[str]:
        assert self.settings is not None
        models_dir = self.settings.models_dir or f"{self.settings.path}/models"
        problems = []
        for node_id, found in node_errors.items():
            label = f"node {node_id!r} ({found.get('class_type') or prompt.get(node_id, {}).get('class_type')})"
            for reason in found.get("errors", []):
                info = reason.get("extra_info") or {}
                value = info.get("received_value")
                if reason.get("type") == "value_not_in_list" and str(value).lower().endswith(MODEL_FILE_SUFFIXES):
                    problems.append(
                        f"{label} input {info.get('input_name')!r}: model file {value!r} not found in the "
                        f"model folders (models_dir: {models_dir})"
                    )
                else:
                    problems.append(f"{label}: {reason.get('message')}: {reason.get('details')}")
        if error is not None and not problems:
            problems.append(f"{error.get('message')}: {error.get('details')}")
        return problems

    def _warm_up(self) -> None:
        """One run with placeholder images: weights load now, not in the first job."""
        from PIL import Image

        gray = Image.new("RGB", WARMUP_SIZE, (128, 128, 128))
        started = time.perf_counter()
        result, _ = self._execute(gray, gray, "warmup", seed=0, steps=None, prompt=None, cancelled=threading.Event())
        if not result.success:
            raise JobError("backend_error", f"warm-up run failed: {self._failure_message(result)}")
        events.info("comfyui_warmed_up", seconds=round(time.perf_counter() - started, 3))

    # --- run ---------------------------------------------------------------------------

    # Three stages (engine.py), overlapped by the worker: decode; the graph; resize and encode.

    def prepare(self, inputs: JobInputs, cancelled: threading.Event) -> imaging.DecodedInputs:
        assert self.settings is not None
        # Upright, and at most input_max_pixels: a 36 MP photo never becomes a float tensor.
        return imaging.decode_inputs(inputs, self.context.max_pixels, self.settings.input_max_pixels, events)

    def model(self, prepared: imaging.DecodedInputs, cancelled: threading.Event) -> imaging.ModelImage:
        inputs = prepared.inputs
        if cancelled.is_set():  # the engine clears its interrupt flag at start: check here
            raise JobCancelled("cancelled before the graph started")
        result, image = self._execute(
            prepared.person.image, prepared.garment.image, inputs.job_id, seed=inputs.seed, steps=inputs.steps,
            prompt=inputs.prompt or None,  # an empty prompt keeps the workflow's default
            cancelled=cancelled,
        )
        events.info(
            "comfyui_graph_executed", job_id=inputs.job_id, success=result.success,
            cached_nodes=result.cached_nodes, execution_s=round(result.execution_s, 4),
            node_seconds={node: round(seconds, 4) for node, seconds in result.node_seconds.items()},
            produced_size=list(image.size) if image is not None else None,
        )
        if not result.success:
            self._raise_failure(result, cancelled)
        return imaging.ModelImage.of(prepared, image, result.execution_s * 1000)

    def finish(self, modelled: imaging.ModelImage) -> JobOutput:
        return imaging.finish_output(modelled)

    def _execute(self, person, garment, job_id: str, *, seed, steps, prompt, cancelled):
        """Run the job's graph; the captured image as PIL (None when the graph failed)."""
        from gpu_worker.backends.comfyui.nodes import to_pil, to_tensor

        assert self.runtime is not None and self.settings is not None and self.exchange is not None
        assert self.progress is not None
        tag = uuid.uuid4().hex[:12]  # unique per run: the engine's cache must not reuse our inputs
        keys = JobKeys(f"{tag}:person", f"{tag}:garment", f"{tag}:output")
        self.exchange.put(keys.person, to_tensor(person))
        self.exchange.put(keys.garment, to_tensor(garment))
        try:
            graph = comfyui_workflow.job_prompt(self.workflow, self.settings, keys, seed=seed, steps=steps, prompt=prompt)
            prompt_id = f"{job_id}:{tag}"
            with self.progress.watching(prompt_id, graph):
                result = self.runtime.execute(graph, prompt_id, [OUTPUT_NODE_ID], cancelled)
            captured = self.exchange.pop(keys.output)
        finally:
            self.exchange.pop(keys.person)
            self.exchange.pop(keys.garment)
            self.exchange.pop(keys.output)
        if result.success and captured is None:
            result = result._replace(success=False, error={"exception_message": "the workflow produced no image"})
        return result, (to_pil(captured) if result.success else None)

    def _raise_failure(self, result: GraphResult, cancelled: threading.Event) -> None:
        if result.interrupted:
            if cancelled.is_set():
                raise JobCancelled("cancelled while the graph ran")
            raise JobError("backend_error", "the graph was interrupted")
        error = result.error or {}
        if is_out_of_memory(error):
            # The first line only: the engine appends tips for its UI's users.
            raise GraphOutOfMemory(self._failure_message(result).split("\n", 1)[0])
        raise JobError("backend_error", self._failure_message(result))

    @staticmethod
    def _failure_message(result: GraphResult) -> str:
        error = result.error or {}
        message = str(error.get("exception_message", "unknown error")).strip()
        if "node_id" in error:
            return f"node {error['node_id']!r} ({error.get('node_type')}): {message}"
        return message

    def free_memory(self) -> None:
        if self.runtime is not None:
            self.runtime.free_memory()

    def release(self) -> None:
        if self.runtime is not None and self.runtime.executor is not None:
            self.runtime.release()

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()

