"""comfyui_config/engine.py: the engine's version, commit and abilities read from its files,
in 0.3.75's shape and upstream's."""

from __future__ import annotations

import subprocess

from comfyui_config import engine

NODES_FLUX_0_3_75 = '''
class FluxKontextMultiReferenceLatentMethod(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(inputs=[io.Combo.Input("reference_latents_method", options=["offset", "index", "uxo/uno"])])
'''
NODES_FLUX_UPSTREAM = NODES_FLUX_0_3_75.replace('"uxo/uno"]', '"uxo/uno", "index_timestep_zero"]')


def engine_root(tmp_path, version: str, nodes_flux: str, ops: str = "import torch\n"):
    (tmp_path / "comfy_extras").mkdir(parents=True)
    (tmp_path / "comfy").mkdir()
    (tmp_path / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    (tmp_path / "comfy_extras" / "nodes_flux.py").write_text(nodes_flux)
    (tmp_path / "comfy" / "ops.py").write_text(ops)
    return tmp_path


def test_0_3_75_is_tested_its_methods_lack_index_timestep_zero_and_it_reads_no_comfy_quant(tmp_path):
    root = engine_root(tmp_path, "0.3.75", NODES_FLUX_0_3_75)
    assert engine.reference_methods_in_source(root) == ("offset", "index", "uxo/uno")
    assert not engine.reads_comfy_quant(root)
    info = engine.info(root)
    assert info == ("0.3.75", None) and info.tested and engine.untested_warning(info) is None


def test_upstream_is_read_from_source_not_tested_and_says_so(tmp_path):
    root = engine_root(tmp_path, "0.38.1", NODES_FLUX_UPSTREAM, ops='key = prefix + "comfy_quant"\n')
    assert "index_timestep_zero" in engine.reference_methods_in_source(root)
    assert engine.reads_comfy_quant(root)
    warning = engine.untested_warning(engine.info(root))
    assert "0.38.1" in warning and "0.3.75" in warning and "read from upstream's source" in warning
    other = engine.untested_warning(engine.EngineInfo("0.40.0", None))
    assert "not tested here and not read from source" in other
    assert "declares no version" in engine.untested_warning(engine.EngineInfo(None, None))


def test_the_commit_from_the_image_builds_file_or_the_checkouts_git(tmp_path):
    root = engine_root(tmp_path, "0.38.1", NODES_FLUX_UPSTREAM)
    assert engine.read_commit(root) is None
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert engine.read_commit(root) == head  # a branch's loose ref
    subprocess.run(git + ["pack-refs", "--all"], check=True)
    assert engine.read_commit(root) == head  # packed-refs
    subprocess.run(git + ["checkout", "-q", "--detach"], check=True)
    assert engine.read_commit(root) == head  # detached
    (root / engine.COMMIT_FILE).write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert engine.read_commit(root) == "0123456789abcdef0123456789abcdef01234567"  # the build's file wins
