"""bench/qwen_shrink.py: the CI shrink (applied to a running engine in
tests/integration/test_comfyui_qwen_run.py)."""

from __future__ import annotations

import math

from bench.qwen_shrink import CI, FULL, _ScaledSqrt, scaled_presets


def test_the_ci_shrink_cuts_depth_and_resolution_only():
    assert (CI.diffusion_blocks, CI.text_layers, CI.vision_blocks, CI.resolution_divisor) == (1, 1, 2, 8)
    assert (FULL.diffusion_blocks, FULL.text_layers, FULL.vision_blocks, FULL.resolution_divisor) == (60, 28, 32, 1)


def test_shrunk_presets_stay_multiples_of_16():
    assert scaled_presets([(1024, 1024), (672, 1568), (880, 1184)], 8) == [(128, 128), (80, 192), (112, 144)]
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in scaled_presets([(16, 16), (688, 1504)], 64))


def test_the_encoders_fixed_totals_are_divided_each_way():
    scaled = _ScaledSqrt(8)
    # The node's own arithmetic: scale_by = sqrt(total / area); each side times scale_by.
    scale_by = scaled.sqrt(1024 * 1024 / (384 * 512))
    assert (round(384 * scale_by), round(512 * scale_by)) == (111, 148)  # ~128 x 128 in area
    assert scaled.pi == math.pi  # the rest of `math` as it is
