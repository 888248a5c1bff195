from __future__ import annotations

import os
import subprocess
import sys

from gpu_worker.backends.comfyui import workdir as comfyui_workdir


def test_a_start_makes_a_folder_named_for_its_process(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(comfyui_workdir.tempfile, "tempdir", None)  # read TMPDIR again
    folder = comfyui_workdir.make()
    assert os.path.dirname(folder) == str(tmp_path)
    assert os.path.basename(folder).startswith(f"gpu-server-comfyui-{os.getpid()}-")
    comfyui_workdir.remove(folder)
    assert not os.path.exists(folder)


def test_the_sweep_removes_only_folders_of_processes_that_are_gone(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    dead = tmp_path / f"gpu-server-comfyui-{dead_pid}-abc"
    alive = tmp_path / f"gpu-server-comfyui-{os.getppid()}-def"  # pytest's parent runs
    mine = tmp_path / f"gpu-server-comfyui-{os.getpid()}-ghi"
    unnamed = tmp_path / "gpu-server-comfyui-k1x2y3z4"  # no pid in its name: not ours to judge
    other = tmp_path / f"something-else-{dead_pid}-abc"
    for folder in (dead, alive, mine, unnamed, other):
        (folder / "temp").mkdir(parents=True)
    assert comfyui_workdir.sweep(str(tmp_path)) == [str(dead)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, mine, unnamed, other))
