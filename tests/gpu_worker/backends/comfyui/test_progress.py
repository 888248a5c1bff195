"""gpu_worker/backends/comfyui/progress.py: the engine's progress hook passes on the steps of
the sampler nodes of the graph being watched, and nothing else. (The real engine's hook,
KSampler and a tiled VAE decode: tests/integration/test_comfyui_progress.py.)"""

from __future__ import annotations

from typing import NamedTuple

from gpu_worker.backends.comfyui.progress import SamplerProgress, is_sampler, sampler_nodes


class Context(NamedTuple):  # the engine's comfy_execution.utils.ExecutionContext
    prompt_id: str
    node_id: str
    list_index: int | None = None


class KSampler:
    CATEGORY = "sampling"


class SamplerCustomAdvanced:
    CATEGORY = "sampling/custom_sampling"


class VAEDecodeTiled:
    CATEGORY = "_for_testing"


class NoCategory:
    pass


NODE_TYPES = {"KSampler": KSampler, "SamplerCustomAdvanced": SamplerCustomAdvanced, "VAEDecodeTiled": VAEDecodeTiled,
              "NoCategory": NoCategory}
GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {}},
    "4": {"class_type": "SamplerCustomAdvanced", "inputs": {}},
    "7": {"class_type": "VAEDecodeTiled", "inputs": {}},
    "8": {"class_type": "NoCategory", "inputs": {}},
    "9": {"class_type": "NotInstalled", "inputs": {}},
}


def test_samplers_are_the_nodes_filed_under_sampling():
    assert is_sampler(KSampler) and is_sampler(SamplerCustomAdvanced)
    assert not is_sampler(VAEDecodeTiled) and not is_sampler(NoCategory) and not is_sampler(None)
    assert sampler_nodes(GRAPH, NODE_TYPES) == {"3", "4"}


def test_upstreams_samplers_filed_under_model_sampling_pass_too():
    # Upstream (0.38.x nodes.py): KSampler is `model/sampling`, the custom samplers below it.
    class UpstreamKSampler:
        CATEGORY = "model/sampling"

    class UpstreamSamplerCustom:
        CATEGORY = "model/sampling/custom"

    class ModelPatch:  # a sibling under model/, not a sampler
        CATEGORY = "model/patches"

    class Lookalike:  # a category that only starts with the same letters
        CATEGORY = "samplingish"

    assert is_sampler(UpstreamKSampler) and is_sampler(UpstreamSamplerCustom)
    assert not is_sampler(ModelPatch) and not is_sampler(Lookalike)
    graph = {"3": {"class_type": "K", "inputs": {}}, "4": {"class_type": "C", "inputs": {}},
             "5": {"class_type": "P", "inputs": {}}}
    types = {"K": UpstreamKSampler, "C": UpstreamSamplerCustom, "P": ModelPatch}
    assert sampler_nodes(graph, types) == {"3", "4"}


def test_only_the_watched_graphs_sampler_steps_pass():
    reported: list[tuple[int, int]] = []
    running: list[Context | None] = [None]
    hook_owner = SamplerProgress(NODE_TYPES, lambda: running[0], lambda step, total: reported.append((step, total)))
    hook = hook_owner.hook

    running[0] = Context("warmup", "3")
    hook(1, 4, None, node_id=None)  # before any job is watched
    with hook_owner.watching("job-1:abc", GRAPH):
        running[0] = Context("job-1:abc", "3")
        hook(1, 4, b"preview", node_id=None)
        hook(2, 4, None)
        running[0] = Context("job-1:abc", "7")
        hook(1, 5, None, node_id=None)  # the tiled VAE decode's own loop: not the job's steps
        running[0] = Context("other-prompt", "3")
        hook(3, 4, None)
        running[0] = Context("job-1:abc", "4")
        hook(1, 2, None, prompt_id="ignored", node_id="7")  # the engine's context wins
    running[0] = Context("job-1:abc", "3")
    hook(4, 4, None)  # the graph is no longer watched
    assert reported == [(1, 4), (2, 4), (1, 2)]


def test_without_the_engines_context_the_bars_own_node_id_decides_and_nothing_raises():
    reported: list[tuple[int, int]] = []
    owner = SamplerProgress(NODE_TYPES, lambda: None, lambda step, total: reported.append((step, total)))
    with owner.watching("job-2:x", GRAPH):
        owner.hook(1, 3, None, node_id="3")
        owner.hook(1, 3, None, node_id="7")
        owner.hook(1, 3, None)  # no way to tell which node: nothing
    failing = SamplerProgress(NODE_TYPES, lambda: 1 / 0)
    failing.hook(1, 3, None, node_id="3")  # a failure in the hook never reaches the sampler
    assert reported == [(1, 3)]
