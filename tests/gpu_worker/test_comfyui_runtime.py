from __future__ import annotations

from gpu_worker.backends.comfyui_runtime import comfyui_version


def test_the_version_is_read_from_the_checkout_without_importing_it(tmp_path):
    assert comfyui_version(tmp_path) is None
    (tmp_path / "comfyui_version.py").write_text('# generated\n__version__ = "0.3.75"\n')
    assert comfyui_version(tmp_path) == "0.3.75"
