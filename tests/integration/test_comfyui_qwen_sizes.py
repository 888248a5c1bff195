"""Canvas and reference the same size, for every FluxKontextImageScale preset, on the real
engine's sizing nodes (tests/support/qwen_sizes.py, run in a child process: only the nodes
that decide sizes, no model)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpu_worker.backends.comfyui.nodes import reference_size
from tests.support.comfyui import require_root
from tests.support.node import REPO

WORKFLOWS = [REPO / "conf" / "workflows" / "qwen_image_edit_tryon.json",
             REPO / "conf" / "workflows" / "qwen_image_edit_2511_tryon.json"]


@pytest.fixture(scope="module")
def presets():
    result = subprocess.run([sys.executable, "-m", "tests.support.qwen_sizes", str(require_root())], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["presets"]


def test_every_presets_start_latent_and_person_reference_latent_agree(presets):
    assert len(presets) == 17
    for p in presets:
        assert p["scaled"] == p["preset"], p  # the photo's exact aspect picks its preset
        assert p["start_latent"] == p["reference_latent"], p
        assert p["start_latent"] == [p["canvas"][1] // 8, p["canvas"][0] // 8], p


def test_the_presets_the_encoder_keeps_are_handed_on_untouched_and_only_six_move(presets):
    moved = [p for p in presets if p["canvas"] != p["preset"]]
    assert {tuple(p["preset"]) for p in moved} == {(688, 1504), (800, 1328), (832, 1248), (1504, 688), (1328, 800),
                                                   (1248, 832)}
    assert all(p["untouched"] for p in presets if p not in moved)  # the same tensor: the same pixels as before
    assert {tuple(p["preset"]): tuple(p["canvas"]) for p in moved}[(832, 1248)] == (840, 1256)
    assert all(tuple(p["canvas"]) == reference_size(*p["preset"]) for p in presets)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_both_workflows_size_the_canvas_and_the_encoders_person_from_the_same_node(path):
    workflow = json.loads(path.read_text())
    assert workflow["114"] == {**workflow["114"], "class_type": "GpuServerQwenReferenceScale", "inputs": {"image": ["93", 0]}}
    assert workflow["111"]["inputs"]["image1"] == ["114", 0]  # the person's reference latent
    assert workflow["112"]["inputs"]["image"] == ["114", 0]  # GetImageSize -> the start latent (node 88)
