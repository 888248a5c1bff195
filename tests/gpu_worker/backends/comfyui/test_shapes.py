"""gpu_worker/backends/comfyui/shapes.py: each adapter given 0.3.75's shape and upstream's."""

from __future__ import annotations

import argparse
import enum
import types

from gpu_worker.backends.comfyui import shapes

GIB = 2**30


def args_0_3_75(**given) -> argparse.Namespace:
    """comfy/cli_args.py of 0.3.75: `--cache-ram` a float (default 0: off), no `--cache-classic`."""
    values = dict(cache_lru=0, cache_ram=0.0, cache_none=False, fast=None)
    values.update(given)
    return argparse.Namespace(**values)


def args_upstream(**given) -> argparse.Namespace:
    """comfy/cli_args.py of 0.38.x: `--cache-ram` nargs='*' type=float default=[]; `--cache-classic`,
    `--high-ram`, `--offline`, `--disable-comfy-compiler` and what they imply."""
    values = dict(cache_lru=0, cache_ram=[], cache_none=False, cache_classic=False, high_ram=False, offline=False,
                  disable_partner_nodes=False, disable_comfy_compiler=False, disable_cuda_graphs=False, fast=None)
    values.update(given)
    return argparse.Namespace(**values)


def test_the_cache_on_0_3_75_classic_by_default_ram_pressure_when_given_a_size():
    assert shapes.choose_cache(args_0_3_75()) == ("CLASSIC", {"lru": 0.0, "ram": 0.0, "ram_inactive": 0.0})
    assert shapes.choose_cache(args_0_3_75(cache_ram=4.0)).kind == "RAM_PRESSURE"
    assert shapes.choose_cache(args_0_3_75(cache_ram=4.0)).args["ram"] == 4.0
    assert shapes.choose_cache(args_0_3_75(cache_lru=10)).kind == "LRU"
    assert shapes.choose_cache(args_0_3_75(cache_none=True)).kind == "NONE"


def test_the_cache_on_upstream_a_list_never_compared_with_a_number():
    # The crash this replaces: `[] > 0` and `float([])` raise TypeError on every config.
    default = shapes.choose_cache(args_upstream(), ram_bytes=64 * GIB)
    assert default.kind == "RAM_PRESSURE"  # upstream's default now
    assert default.args == {"lru": 0.0, "ram": 6.4, "ram_inactive": 64.0}  # as upstream's main.py sizes them
    small = shapes.choose_cache(args_upstream(), ram_bytes=8 * GIB).args
    big = shapes.choose_cache(args_upstream(), ram_bytes=1024 * GIB).args
    assert (small["ram"], big["ram"], big["ram_inactive"]) == (2.0, 10.0, 128.0)  # the clamps
    assert shapes.choose_cache(args_upstream(cache_ram=[3.0]), ram_bytes=64 * GIB).args["ram"] == 3.0
    assert shapes.choose_cache(args_upstream(cache_ram=[3.0, 20.0]), ram_bytes=64 * GIB).args["ram_inactive"] == 20.0
    assert shapes.choose_cache(args_upstream(cache_classic=True), ram_bytes=GIB).kind == "CLASSIC"
    assert shapes.choose_cache(args_upstream(cache_lru=5), ram_bytes=GIB).kind == "LRU"
    assert shapes.choose_cache(args_upstream(cache_none=True), ram_bytes=GIB).kind == "NONE"


def test_main_pys_post_parse_fix_ups_on_upstream_and_nothing_on_0_3_75():
    args = args_upstream(high_ram=True, offline=True)
    assert shapes.post_parse_fixups(args) == ["cache_classic", "disable_partner_nodes"]
    assert args.cache_classic and args.disable_partner_nodes and not args.disable_cuda_graphs
    assert shapes.choose_cache(args, ram_bytes=GIB).kind == "CLASSIC"  # high_ram keeps the classic cache
    args = args_upstream(disable_comfy_compiler=True)
    assert shapes.post_parse_fixups(args) == ["disable_cuda_graphs"] and args.disable_cuda_graphs
    old = args_0_3_75()
    assert shapes.post_parse_fixups(old) == [] and vars(old) == vars(args_0_3_75())


def test_every_folder_the_engine_has_a_setter_for_is_set():
    def folder_paths(*names):
        module = types.SimpleNamespace(set=[])
        for name in names:
            setattr(module, f"set_{name}_directory", lambda path, name=name: module.set.append((name, path)))
        return module

    old = folder_paths("input", "output", "temp", "user")
    assert shapes.set_folders(old, lambda name: f"/w/{name}") == ["input", "output", "temp", "user"]
    new = folder_paths("input", "output", "temp", "user", "previews")  # upstream's previews_directory
    assert shapes.set_folders(new, lambda name: f"/w/{name}")[-1] == "previews"
    assert ("previews", "/w/previews") in new.set


class PerformanceFeature(enum.Enum):  # comfy/cli_args.py's, in both versions
    Fp16Accumulation = "fp16_accumulation"
    AutoTune = "autotune"


class FakeTorch:
    def __init__(self, cuda: bool, benchmark: bool) -> None:
        cudnn = types.SimpleNamespace(benchmark=benchmark, is_available=lambda: True)
        self.backends = types.SimpleNamespace(cudnn=cudnn)
        self.cuda = types.SimpleNamespace(is_available=lambda: cuda)


def test_fast_autotune_is_applied_where_the_engine_left_it_to_main_py():
    upstream = FakeTorch(cuda=True, benchmark=False)  # upstream's model_management left it off
    assert shapes.apply_autotune(args_upstream(fast={PerformanceFeature.AutoTune}), upstream)
    assert upstream.backends.cudnn.benchmark is True
    old = FakeTorch(cuda=True, benchmark=True)  # 0.3.75 set it at import: nothing to do
    assert not shapes.apply_autotune(args_0_3_75(fast={PerformanceFeature.AutoTune}), old)
    untouched = FakeTorch(cuda=True, benchmark=False)
    assert not shapes.apply_autotune(args_upstream(fast={PerformanceFeature.Fp16Accumulation}), untouched)
    assert not shapes.apply_autotune(args_upstream(fast=None), untouched)
    assert not shapes.apply_autotune(args_upstream(fast={"autotune"}), FakeTorch(cuda=False, benchmark=False))
    assert untouched.backends.cudnn.benchmark is False
