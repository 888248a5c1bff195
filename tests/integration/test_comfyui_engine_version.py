"""An engine version outside the tested table starts, with a WARNING naming the difference,
and says so in Ready (`engine_tested: false`): the real worker on a copy of the vendored
engine's tree (symbolic links) that declares another version and carries a commit file."""

from __future__ import annotations

from ipc.messages import Ready
from tests.support.comfyui import blend_settings, require_root
from tests.support.worker_harness import WorkerHarness

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_an_untested_engine_version_starts_with_a_warning_and_reports_its_commit(tmp_path):
    vendored = require_root()
    root = tmp_path / "ComfyUI"
    root.mkdir()
    for entry in vendored.iterdir():
        if entry.name not in ("comfyui_version.py", "__pycache__"):
            (root / entry.name).symlink_to(entry)
    (root / "comfyui_version.py").write_text('__version__ = "0.38.1"\n')
    (root / "comfyui_commit.txt").write_text(COMMIT + "\n")
    settings = {**blend_settings(vendored), "path": str(root)}
    (tmp_path / "work").mkdir()
    harness = WorkerHarness(tmp_path / "work", "tests.support.comfyui:TestComfyUIBackend", settings).start()
    try:
        ready = harness.receive(timeout=300)
        assert isinstance(ready, Ready), f"{ready}\n{harness.tail()}"
        assert (ready.comfyui_version, ready.comfyui_commit, ready.engine_tested) == ("0.38.1", COMMIT, False)
        warning = harness.wait_event("comfyui_engine_untested")
        assert warning["level"] == "WARNING" and warning["version"] == "0.38.1" and warning["tested"] == ["0.3.75"]
        assert "read from upstream's source and handled, not run here" in warning["difference"]
    finally:
        harness.stop()
