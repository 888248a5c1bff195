"""Stand-ins for `av` and `scipy`, which ComfyUI imports at start and a try-on never uses."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gpu_worker.backends.comfyui import optional as comfyui_optional
from gpu_worker.backends.comfyui.optional import Absent
from tests.support.comfyui import require_root
from tests.support.node import REPO


def test_what_a_stand_in_hands_out_fails_only_when_used():
    absent = Absent("av.container").InputContainer
    assert repr(absent) == "<absent av.container.InputContainer>"
    with pytest.raises(ModuleNotFoundError, match=r"'av' is not installed; ComfyUI's video and audio nodes need it"):
        absent("file.mp4")
    with pytest.raises(ModuleNotFoundError, match="scipy"):
        class Sub(Absent("scipy.stats").rv_continuous):  # noqa: F841 - subclassing is using it
            pass


def test_installed_packages_are_never_replaced():
    # Both are installed in the test environment: nothing to stand in for.
    assert comfyui_optional.install() == []
    import av

    assert not isinstance(av, comfyui_optional.StandIn)


HIDDEN = textwrap.dedent('''
    import importlib.abc, sys

    class Hide(importlib.abc.MetaPathFinder):  # as if av and scipy were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("av", "scipy"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Hide())
''')


def test_without_av_and_scipy_the_engine_still_loads_the_qwen_nodes_and_samples():
    root = require_root()
    script = HIDDEN + textwrap.dedent(f'''
        from tests.support.comfyui import declare_torchvision_ops
        from gpu_worker.backends.comfyui.runtime import ComfyUIRuntime

        declare_torchvision_ops()
        runtime = ComfyUIRuntime({str(root)!r}, "cpu", None, None)
        runtime.start({{}})
        print("STAND_INS", runtime.stand_ins)
        types = runtime.node_types
        assert {{"TextEncodeQwenImageEditPlus", "FluxKontextImageScale", "KSampler"}} <= set(types)
        import comfy.samplers, comfy.model_sampling, scipy.stats
        # The workflow's scheduler needs no scipy; the beta scheduler does, and says so.
        class Sampling(comfy.model_sampling.ModelSamplingDiscreteFlow):
            pass
        sampling = Sampling(None)
        print("SIGMAS", len(comfy.samplers.calculate_sigmas(sampling, "simple", 4)))
        try:
            scipy.stats.beta.ppf(0.5, 0.6, 0.6)
        except ModuleNotFoundError as exc:
            print("USE", exc)
    ''')
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "STAND_INS ['av', 'scipy']" in result.stdout
    assert "SIGMAS 5" in result.stdout
    assert "USE scipy.stats.beta.ppf: the package 'scipy' is not installed" in result.stdout


def test_a_package_upstreams_model_management_imports_is_named_when_missing(tmp_path):
    from gpu_worker.backends.comfyui.optional import missing_required

    (tmp_path / "comfy").mkdir()
    mm = tmp_path / "comfy" / "model_management.py"
    mm.write_text("import psutil\nimport torch\n")  # 0.3.75's shape: nothing more needed
    assert missing_required(str(tmp_path)) == []
    mm.write_text("import psutil\nimport comfy_aimdo.control\ntry:\n    import comfy_kitchen\nexcept ImportError:\n    pass\n")
    (problem,) = missing_required(str(tmp_path))  # comfy_kitchen is optional there: not named
    assert "comfy_aimdo" in problem and "pip install comfy-aimdo" in problem
