"""API-format workflows: checking the config's mapping against one, and shaping it per job.

Pure data work, no ComfyUI import: the engine's node classes come in as a mapping of
class_type -> class (anything with ComfyUI's `INPUT_TYPES()` and `RETURN_TYPES`).

Per job the workflow is copied and
- each mapped image loader is replaced by our in-memory loader (same outputs: IMAGE, MASK)
  that reads the job's decoded image under a per-job key;
- prompt, seed and steps are written into their mapped inputs;
- our capture node is added, fed by the link of the mapped output input; only it is
  executed, so the workflow's own SaveImage never writes a file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from comfyui_config.settings import DEFAULT_KEY, ComfyUISettings, Target

# Our own nodes, registered in the engine at start (gpu_worker/backends/comfyui/nodes.py).
IMAGE_INPUT_NODE = "GpuServerImageInput"
IMAGE_OUTPUT_NODE = "GpuServerImageOutput"
OUTPUT_NODE_ID = "gpu_server_output"

# What a mapped input must accept, as ComfyUI declares input types.
OPTION_TYPES = {"prompt": "STRING", "seed": "INT", "steps": "INT"}


class WorkflowError(Exception):
    """The workflow or its mapping cannot work; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class JobKeys(NamedTuple):
    """Names under which one job's images travel between the backend and our nodes."""

    person: str
    garment: str
    output: str


def load(path: str) -> dict[str, dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkflowError([f"workflow {path}: cannot read it as JSON ({exc})"]) from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError([
            f"workflow {path}: this is ComfyUI's UI format; export it in API format "
            "(Workflow > Export (API)) instead"
        ])
    if not isinstance(data, dict) or not data:
        raise WorkflowError([f"workflow {path}: expected an API-format object of node id -> node"])
    problems = [
        f"workflow {path}: node {node_id!r} has no class_type and inputs"
        for node_id, node in data.items()
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str)
        or not isinstance(node.get("inputs"), dict)
    ]
    if problems:
        raise WorkflowError(problems)
    return data


def declared_inputs(node_class: Any) -> dict[str, Any]:
    """The node class's inputs, required and optional, name -> ComfyUI's type spec."""
    spec = node_class.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def input_type(node_class: Any, name: str) -> Any:
    """`INT`, `STRING`, `IMAGE`, ..., or a list for a choice (COMBO) input."""
    spec = declared_inputs(node_class).get(name)
    return spec[0] if isinstance(spec, (tuple, list)) and spec else spec


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def check(
    workflow: Mapping[str, dict],
    settings: ComfyUISettings,
    node_types: Mapping[str, Any],
    key: str = DEFAULT_KEY,
) -> list[str]:
    """Every problem of the workflow and the mapping that can be seen without running it."""
    problems = [
        f"workflow node {node_id!r}: node type {node['class_type']!r} is not available in this "
        "ComfyUI (a custom node that is not installed, or a newer ComfyUI's node?)"
        for node_id, node in workflow.items()
        if node["class_type"] not in node_types
    ]

    def target_problem(name: str, target: Target, want: str | None) -> str | None:
        where = f"{key}.{name}"
        node = workflow.get(target.node_id)
        if node is None:
            return f"{where}: node {target.node_id!r} is not in the workflow"
        node_class = node_types.get(node["class_type"])
        if node_class is None:
            return None  # already reported as a missing node type
        label = f"node {target.node_id!r} ({node['class_type']})"
        declared = declared_inputs(node_class)
        if target.input not in declared:
            return f"{where}: {label} has no input {target.input!r} (it has: {', '.join(sorted(declared))})"
        got = input_type(node_class, target.input)
        if want is not None and got != want:
            return f"{where}: {label} input {target.input!r} is of type {got!r}, not {want}"
        return None

    targets: list[tuple[str, Target, str | None]] = []
    for name in ("person_image", "garment_image"):
        target = getattr(settings.inputs, name)
        targets.append((f"inputs.{name}", target, None))
        node = workflow.get(target.node_id)
        node_class = node_types.get(node["class_type"]) if node else None
        returns = tuple(getattr(node_class, "RETURN_TYPES", ())) if node_class else ()
        if node_class is not None and returns[:1] != ("IMAGE",):
            problems.append(
                f"{key}.inputs.{name}: node {target.node_id!r} ({node['class_type']}) is not an image "
                "loader (its first output must be an IMAGE, like LoadImage's)"
            )
    for name, want in OPTION_TYPES.items():
        target = getattr(settings.inputs, name)
        if target is not None:
            targets.append((f"inputs.{name}", target, want))
    targets.append(("output", settings.output, "IMAGE"))
    problems += [p for p in (target_problem(*t) for t in targets) if p is not None]

    return problems + wiring_problems(workflow, settings, key)


def check_without_engine(workflow: Mapping[str, dict], settings: ComfyUISettings, key: str = DEFAULT_KEY) -> list[str]:
    """What `check` can tell without the engine's node classes (for `gpu-server
    check-config`, which never imports ComfyUI): each mapped node is in the workflow and
    has the mapped input (an API-format workflow lists every input of a node), the two
    images are two nodes, and the output input is a link."""
    problems = []
    targets = [(f"inputs.{name}", getattr(settings.inputs, name)) for name in ("person_image", "garment_image")]
    targets += [(f"inputs.{name}", getattr(settings.inputs, name)) for name in OPTION_TYPES]
    targets.append(("output", settings.output))
    for name, target in targets:
        if target is None:
            continue
        node = workflow.get(target.node_id)
        if node is None:
            problems.append(f"{key}.{name}: node {target.node_id!r} is not in the workflow")
        elif target.input not in node["inputs"]:
            problems.append(
                f"{key}.{name}: node {target.node_id!r} ({node['class_type']}) has no input {target.input!r} "
                f"in the workflow (it has: {', '.join(sorted(node['inputs']))})"
            )
    return problems + wiring_problems(workflow, settings, key)


def job_prompt(
    workflow: Mapping[str, dict],
    settings: ComfyUISettings,
    keys: JobKeys,
    *,
    seed: int | None = None,
    steps: int | None = None,
    prompt: str | None = None,
) -> dict[str, dict]:
    """The workflow shaped for one job (see the module's doc); run only OUTPUT_NODE_ID."""
    graph = copy.deepcopy(dict(workflow))
    mapping = settings.inputs
    for target, key in ((mapping.person_image, keys.person), (mapping.garment_image, keys.garment)):
        graph[target.node_id] = {"class_type": IMAGE_INPUT_NODE, "inputs": {"key": key}}
    for target, value in ((mapping.seed, seed), (mapping.steps, steps), (mapping.prompt, prompt)):
        if target is not None and value is not None:
            graph[target.node_id]["inputs"][target.input] = value
    source = graph[settings.output.node_id]["inputs"][settings.output.input]
    graph[OUTPUT_NODE_ID] = {"class_type": IMAGE_OUTPUT_NODE, "inputs": {"images": source, "key": keys.output}}
    return graph


def wiring_problems(workflow: Mapping[str, dict], settings: ComfyUISettings, key: str) -> list[str]:
    """What both checks judge alike: the two images are two nodes, and the output input is a
    link (to the node that makes the image), not a value."""
    problems = []
    if settings.inputs.person_image.node_id == settings.inputs.garment_image.node_id:
        problems.append(f"{key}.inputs: person_image and garment_image name the same node")
    output_node = workflow.get(settings.output.node_id)
    if output_node is not None and settings.output.input in output_node["inputs"]:
        if not is_link(output_node["inputs"][settings.output.input]):
            problems.append(
                f"{key}.output: input {settings.output.input!r} of node {settings.output.node_id!r} "
                "is not linked to the node that makes the image"
            )
    return problems
