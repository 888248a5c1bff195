from __future__ import annotations

import pytest

from comfyui_config.settings import SettingsError, parse


@pytest.fixture
def comfy_root(tmp_path):
    root = tmp_path / "ComfyUI"
    root.mkdir()
    (root / "execution.py").touch()
    (root / "nodes.py").touch()
    (tmp_path / "flow.json").write_text("{}")
    (tmp_path / "models").mkdir()
    return tmp_path


def raw(**overrides) -> dict:
    settings = {
        "path": "ComfyUI",
        "workflow": "flow.json",
        "inputs": {"person_image": {"node": 1, "input": "image"}, "garment_image": {"node": "2", "input": "image"}},
        "output": {"node": "9", "input": "images"},
    }
    settings.update(overrides)
    return settings


def test_relative_paths_are_relative_to_the_config_folder(comfy_root):
    settings = parse(raw(models_dir="models"), str(comfy_root))
    assert settings.path == str(comfy_root / "ComfyUI")
    assert settings.workflow == str(comfy_root / "flow.json")
    assert settings.models_dir == str(comfy_root / "models")
    assert settings.extra_model_paths is None
    assert settings.warmup is True
    assert settings.input_max_pixels == 4194304  # 2048 x 2048: the Qwen graph works at ~1 MP
    # YAML reads `node: 1` as an int; workflow ids are strings.
    assert settings.inputs.person_image.node_id == "1"
    assert settings.inputs.prompt is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"inputs": {"person_image": {"node": "1", "input": "image"}}}, "model.comfyui.inputs: Object missing required field `garment_image`"),
        ({"output": {"node": "9"}}, "model.comfyui.output: Object missing required field `input`"),
        ({"warmup": "sometimes"}, "model.comfyui.warmup: Expected `bool`"),
        ({"input_max_pixels": 0}, "model.comfyui.input_max_pixels: Expected `int` >= 1"),
        ({"input_max_pixels": "big"}, "model.comfyui.input_max_pixels: Expected `int`"),
        ({"typo_key": 1}, "model.comfyui: Object contains unknown field `typo_key`"),
        ({"path": "elsewhere"}, "model.comfyui.path: "),
        ({"workflow": "missing.json"}, "model.comfyui.workflow: no file"),
        ({"models_dir": "no-such-folder"}, "model.comfyui.models_dir: no folder"),
        ({"extra_model_paths": "extra.yaml"}, "model.comfyui.extra_model_paths: no file"),
    ],
)
def test_each_problem_names_its_key(comfy_root, overrides, message):
    with pytest.raises(SettingsError) as caught:
        parse(raw(**overrides), str(comfy_root))
    assert str(caught.value).startswith(message)


def test_the_key_prefix_follows_where_the_settings_live(comfy_root):
    with pytest.raises(SettingsError, match=r"^model\.custom\.warmup: "):
        parse(raw(warmup="no way"), str(comfy_root), key="model.custom")


def test_engine_options_allocator_and_custom_nodes(comfy_root):
    settings = parse(raw(), str(comfy_root))
    assert (settings.options, settings.cuda_malloc, settings.custom_nodes) == ({}, True, False)
    assert settings.custom_node_folders is None  # no packs
    assert parse(raw(custom_nodes=True), str(comfy_root)).custom_node_folders == []  # the root's custom_nodes/
    (comfy_root / "packs").mkdir()
    settings = parse(raw(custom_nodes=["packs"], options={"highvram": True}, cuda_malloc=False), str(comfy_root))
    assert settings.custom_node_folders == [str(comfy_root / "packs")]
    assert (settings.options, settings.cuda_malloc) == ({"highvram": True}, False)
    with pytest.raises(SettingsError, match=r"model.comfyui.custom_nodes\[1\]: no folder .*absent"):
        parse(raw(custom_nodes=["packs", "absent"]), str(comfy_root))
    with pytest.raises(SettingsError, match=r"model.comfyui.options: Expected `object`"):
        parse(raw(options=["highvram"]), str(comfy_root))
