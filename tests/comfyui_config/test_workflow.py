from __future__ import annotations

import json

import pytest

from comfyui_config import workflow as wf
from comfyui_config.settings import ComfyUISettings, InputMapping, Target


class LoadImage:
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (["a.png"], {"image_upload": True})}}


class KSampler:
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {}), "steps": ("INT", {}), "latent": ("LATENT",)}}


class TextEncode:
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prompt": ("STRING", {})}, "optional": {"image1": ("IMAGE",)}}


class Decode:
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}


class SaveImage:
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {})}}


NODE_TYPES = {c.__name__: c for c in (LoadImage, KSampler, TextEncode, Decode, SaveImage)}
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "person.png"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "garment.png"}},
    "5": {"class_type": "TextEncode", "inputs": {"prompt": "default prompt", "image1": ["1", 0]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 0, "steps": 4, "latent": ["5", 0]}},
    "8": {"class_type": "Decode", "inputs": {"samples": ["3", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "out"}},
}


def settings(**inputs) -> ComfyUISettings:
    mapping = {
        "person_image": Target("1", "image"), "garment_image": Target("2", "image"),
        "prompt": Target("5", "prompt"), "seed": Target("3", "seed"), "steps": Target("3", "steps"),
    }
    mapping.update(inputs)
    output = mapping.pop("output", Target("9", "images"))
    return ComfyUISettings(path="/c", workflow="/w.json", inputs=InputMapping(**mapping), output=output)


def test_a_valid_mapping_has_no_problems():
    assert wf.check(WORKFLOW, settings(), NODE_TYPES) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"seed": Target("99", "seed")}, "model.comfyui.inputs.seed: node '99' is not in the workflow"),
        ({"steps": Target("3", "step")}, "model.comfyui.inputs.steps: node '3' (KSampler) has no input 'step' (it has: latent, seed, steps)"),
        ({"prompt": Target("3", "seed")}, "model.comfyui.inputs.prompt: node '3' (KSampler) input 'seed' is of type 'INT', not STRING"),
        ({"person_image": Target("5", "prompt")}, "model.comfyui.inputs.person_image: node '5' (TextEncode) is not an image loader"),
        ({"garment_image": Target("1", "image")}, "model.comfyui.inputs: person_image and garment_image name the same node"),
        ({"output": Target("9", "filename_prefix")}, "model.comfyui.output: node '9' (SaveImage) input 'filename_prefix' is of type 'STRING', not IMAGE"),
    ],
)
def test_each_mapping_problem_is_named(change, problem):
    problems = wf.check(WORKFLOW, settings(**change), NODE_TYPES)
    assert any(p.startswith(problem) for p in problems), problems


def test_a_node_type_the_engine_lacks_is_named():
    workflow = {**WORKFLOW, "7": {"class_type": "ComfySwitchNode", "inputs": {}}}
    (problem,) = wf.check(workflow, settings(), NODE_TYPES)
    assert problem.startswith("workflow node '7': node type 'ComfySwitchNode' is not available")


def test_an_output_input_that_is_not_a_link_is_refused():
    workflow = {**WORKFLOW, "9": {"class_type": "SaveImage", "inputs": {"images": "not a link", "filename_prefix": "x"}}}
    problems = wf.check(workflow, settings(), NODE_TYPES)
    assert any("is not linked" in p for p in problems), problems


def test_the_job_prompt_swaps_loaders_sets_options_and_adds_the_capture_node():
    keys = wf.JobKeys("k:person", "k:garment", "k:out")
    graph = wf.job_prompt(WORKFLOW, settings(), keys, seed=7, steps=2, prompt="wear it")
    assert graph["1"] == {"class_type": wf.IMAGE_INPUT_NODE, "inputs": {"key": "k:person"}}
    assert graph["2"] == {"class_type": wf.IMAGE_INPUT_NODE, "inputs": {"key": "k:garment"}}
    assert graph["3"]["inputs"] == {"seed": 7, "steps": 2, "latent": ["5", 0]}
    assert graph["5"]["inputs"]["prompt"] == "wear it"
    assert graph[wf.OUTPUT_NODE_ID] == {"class_type": wf.IMAGE_OUTPUT_NODE, "inputs": {"images": ["8", 0], "key": "k:out"}}
    # The workflow itself is untouched, for the next job.
    assert WORKFLOW["3"]["inputs"]["seed"] == 0 and WORKFLOW["1"]["class_type"] == "LoadImage"


def test_options_a_job_leaves_out_keep_the_workflows_values():
    graph = wf.job_prompt(WORKFLOW, settings(), wf.JobKeys("p", "g", "o"), seed=1)
    assert graph["3"]["inputs"]["steps"] == 4
    assert graph["5"]["inputs"]["prompt"] == "default prompt"


def test_load_refuses_the_ui_format_with_a_hint(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(wf.WorkflowError, match="API format"):
        wf.load(str(path))
    path.write_text(json.dumps({"3": {"inputs": {}}}))
    with pytest.raises(wf.WorkflowError, match="node '3' has no class_type"):
        wf.load(str(path))


# --- without the engine (gpu-server check-config) -------------------------------------


def test_without_the_engine_a_valid_mapping_has_no_problems():
    assert wf.check_without_engine(WORKFLOW, settings()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"seed": Target("99", "seed")}, "model.comfyui.inputs.seed: node '99' is not in the workflow"),
        ({"steps": Target("3", "step")}, "model.comfyui.inputs.steps: node '3' (KSampler) has no input 'step' in the workflow (it has: latent, seed, steps)"),
        ({"garment_image": Target("1", "image")}, "model.comfyui.inputs: person_image and garment_image name the same node"),
        ({"output": Target("9", "filename_prefix")}, "model.comfyui.output: input 'filename_prefix' of node '9' is not linked"),
    ],
)
def test_without_the_engine_each_mapping_problem_is_named(change, problem):
    problems = wf.check_without_engine(WORKFLOW, settings(**change))
    assert any(p.startswith(problem) for p in problems), problems


def test_the_shipped_2511_workflow_takes_the_production_mapping_with_upstreams_template_values():
    from pathlib import Path

    from comfyui_config import settings as comfyui_settings
    from tests.support.qwen import production_comfyui

    path = Path(__file__).resolve().parents[2] / "conf" / "workflows" / "qwen_image_edit_2511_tryon.json"
    workflow = wf.load(str(path))
    raw = {**production_comfyui(), "workflow": str(path)}
    settings = comfyui_settings.parse(raw, str(path.parent), "model.comfyui", check=False)
    assert wf.check_without_engine(workflow, settings, "model.comfyui") == []
    assert workflow["66"]["inputs"]["shift"] == 3.1  # upstream's 2511 template
    method = workflow["113"]
    assert method["class_type"] == "FluxKontextMultiReferenceLatentMethod"
    assert method["inputs"] == {"conditioning": ["111", 0], "reference_latents_method": "index_timestep_zero"}
    assert workflow["3"]["inputs"]["positive"] == ["113", 0] and workflow["110"]["inputs"]["conditioning"] == ["113", 0]
    assert json.loads(path.read_text())["89"]["inputs"]["lora_name"].startswith("Qwen-Image-Edit-2511-Lightning-4steps")
