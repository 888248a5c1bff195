"""Checking and applying the engine's start-up options, on a parser shaped like ComfyUI's
comfy/cli_args.py (the real one is judged through check-config in
tests/supervisor/test_preflight.py and through the worker in the integration tests)."""

from __future__ import annotations

import argparse
import enum

import pytest

from gpu_worker.backends.comfyui import options

KEY = "model.comfyui"


class Feature(enum.Enum):
    Fp8 = "fp8_matrix_mult"
    AutoTune = "autotune"


def engine_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=str, default="127.0.0.1", nargs="?", const="0.0.0.0")
    vram = parser.add_mutually_exclusive_group()
    vram.add_argument("--highvram", action="store_true")
    vram.add_argument("--normalvram", action="store_true")
    vram.add_argument("--cpu", action="store_true")
    parser.add_argument("--reserve-vram", type=float, default=None)
    parser.add_argument("--async-offload", nargs="?", const=2, type=int, default=None)
    parser.add_argument("--fast", nargs="*", type=Feature)
    parser.add_argument("--fp8_e4m3fn-unet", action="store_true")
    parser.add_argument("--use-sage-attention", action="store_true")
    parser.add_argument("--cache-lru", type=int, default=0)
    return parser


def fresh(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args([])
    args.fast = set()  # as cli_args.py leaves it when --fast is not given
    return args


def test_options_are_applied_as_the_engines_own_start_would_read_them():
    parser = engine_parser()
    args = fresh(parser)
    options.apply({
        "highvram": True, "reserve_vram": "1.5", "async_offload": True, "fast": ["fp8_matrix_mult"],
        "fp8_e4m3fn_unet": "true", "cache_lru": 0,
    }, parser, args, KEY)
    assert (args.highvram, args.reserve_vram, args.async_offload, args.fp8_e4m3fn_unet) == (True, 1.5, 2, True)
    assert args.fast == {Feature.Fp8}
    assert options.in_force(parser, args) == {  # JSON-ready, each differing from the default
        "highvram": True, "reserve_vram": 1.5, "async_offload": 2, "fast": ["fp8_matrix_mult"],
        "fp8_e4m3fn_unet": True,
    }


def test_values_for_optional_values_and_lists():
    parser = engine_parser()
    args = fresh(parser)
    options.apply({"async_offload": 3, "fast": []}, parser, args, KEY)
    assert args.async_offload == 3
    assert args.fast == set(Feature)  # an empty list: every feature, as a bare --fast
    args = fresh(parser)
    options.apply({"async_offload": False, "highvram": False, "fast": "autotune"}, parser, args, KEY)
    assert (args.async_offload, args.highvram, args.fast) == (None, False, {Feature.AutoTune})


def test_every_problem_at_once_each_naming_its_option():
    parser = engine_parser()
    args = fresh(parser)
    with pytest.raises(options.OptionsError) as caught:
        options.apply({
            "cpu": True, "listen": "0.0.0.0", "hivram": True, "reserve_vram": "lots", "fast": ["warp"],
            "highvram": "maybe", "cache_lru": [1], "normalvram": True, "fp8_e4m3fn_unet": True,
        }, parser, args, KEY)
    problems = dict(p.split(": ", 1) for p in caught.value.problems)
    assert problems[f"{KEY}.options.cpu"] == "set by the node itself (the device is worker.device)"
    assert problems[f"{KEY}.options.listen"].startswith("set by the node itself (the node runs no ComfyUI server")
    unknown = problems[f"{KEY}.options.hivram"]
    assert unknown.startswith("not an option of this engine; did you mean 'highvram'? valid: ")
    assert unknown.endswith("async_offload, cache_lru, fast, fp8_e4m3fn_unet, highvram, normalvram, reserve_vram, "
                            "use_sage_attention")  # the engine's options, less those the node owns
    assert problems[f"{KEY}.options.reserve_vram"] == "--reserve-vram: invalid float value: 'lots'"
    assert problems[f"{KEY}.options.fast"] == ("--fast: invalid Feature value: 'warp' "
                                               "(valid: fp8_matrix_mult, autotune)")
    assert problems[f"{KEY}.options.highvram"] == "a switch: true or false, not 'maybe'"
    assert problems[f"{KEY}.options.cache_lru"] == "one value, not [1]"
    assert f"{KEY}.options.fp8_e4m3fn_unet" not in problems
    assert args == fresh(parser)  # nothing was set


def test_options_of_one_exclusive_group_are_refused_together():
    parser = engine_parser()
    problems, _ = options.check({"highvram": True, "normalvram": "yes"}, parser, KEY)
    assert problems == [f"{KEY}.options: highvram and normalvram exclude each other (one of: highvram, normalvram, cpu)"]
    assert options.check({"highvram": True, "normalvram": False}, parser, KEY) == ([], ["--highvram"])


def test_an_attention_package_that_is_missing_is_named():
    assert options.missing_packages({"use_sage_attention": False}, KEY) == []
    (problem,) = options.missing_packages({"use_sage_attention": True}, KEY)
    assert problem.startswith(f"{KEY}.options.use_sage_attention: needs the package 'sageattention', "
                              "which does not import here (ModuleNotFoundError")
    assert options.missing_packages({"use_flash_attention": "1"}, KEY, import_them=False) == [
        f"{KEY}.options.use_flash_attention: needs the package 'flash_attn', which is not installed"]


def test_the_owned_list_gives_each_option_a_replacement():
    assert {"cpu", "listen", "port", "temp_directory", "cuda_malloc", "disable_all_custom_nodes",
            "preview_method", "verbose"} <= set(options.OWNED)
    assert all(reason for reason in options.OWNED.values())


def test_upstreams_server_only_options_are_refused_and_its_list_valued_cache_ram_is_applied():
    # comfy/cli_args.py of 0.38.x: server, asset, manager and layout options, and
    # `--cache-ram` as a list of floats.
    parser = engine_parser()
    parser.add_argument("--cache-ram", nargs="*", type=float, default=[])
    parser.add_argument("--cache-classic", action="store_true")
    for flag in ("--disable-assets", "--offline", "--enable-manager", "--date-based-output"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--feature-flag", type=str, action="append", default=[])
    parser.add_argument("--disabled-nodes-config", type=str, default=None)
    parser.add_argument("--models-directory", type=str, default=None)
    problems, _ = options.check({"disable_assets": True, "offline": True, "enable_manager": True,
                                 "date_based_output": True, "feature_flag": ["x"],
                                 "disabled_nodes_config": "/c.json", "models_directory": "/m"}, parser, KEY)
    assert len(problems) == 7 and all("set by the node itself" in p for p in problems)
    assert any("models_directory" in p and "model.comfyui.models_dir" in p for p in problems)
    args = fresh(parser)
    options.apply({"cache_ram": [4, 32], "cache_classic": True}, parser, args, KEY)
    assert args.cache_ram == [4.0, 32.0] and args.cache_classic is True
    options.apply({"cache_ram": 6}, parser, args, KEY)  # one value: the active size
    assert args.cache_ram == [6.0]
