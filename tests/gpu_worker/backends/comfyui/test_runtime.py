from __future__ import annotations

from gpu_worker.backends.comfyui.runtime import comfyui_version


def test_the_version_is_read_from_the_checkout_without_importing_it(tmp_path):
    assert comfyui_version(tmp_path) is None
    (tmp_path / "comfyui_version.py").write_text('# generated\n__version__ = "0.3.75"\n')
    assert comfyui_version(tmp_path) == "0.3.75"


def test_the_cuda_device_is_set_again_in_the_thread_that_runs_jobs(tmp_path, monkeypatch):
    import threading

    import torch

    from gpu_worker.backends.comfyui.runtime import ComfyUIRuntime

    chosen: list[tuple[str, int]] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: chosen.append((threading.current_thread().name, index)))
    runtime = ComfyUIRuntime(str(tmp_path), "cuda:1", None, None)
    runtime.device = "cuda:1"  # as load() leaves it on a machine with 2 GPUs
    job_thread = threading.Thread(target=runtime.bind_device_to_this_thread, name="job")
    job_thread.start()
    job_thread.join()
    assert chosen == [("job", 1)]

    runtime.device = "cpu"
    runtime.bind_device_to_this_thread()
    assert chosen == [("job", 1)]  # nothing to set on the CPU


def test_per_node_seconds_come_from_the_engines_progress_states(monkeypatch):
    from gpu_worker.backends.comfyui import runtime as comfyui_runtime

    clock = iter([1.0, 2.0, 2.5, 4.0, 9.0])
    monkeypatch.setattr(comfyui_runtime.time, "perf_counter", lambda: next(clock))
    server = comfyui_runtime._Silent()

    def states(**nodes):
        server.send_sync("progress_state", {"prompt_id": "p", "nodes": {k: {"state": v} for k, v in nodes.items()}})

    states(**{"37": "finished"})  # 1.0: cached, it finishes without running: no time
    states(**{"37": "finished", "3": "running"})  # 2.0
    server.send_sync("executing", {"node": "3"})  # other messages are ignored (no clock read)
    states(**{"37": "finished", "3": "finished", "8": "running"})  # 2.5
    states(**{"37": "finished", "3": "finished", "8": "finished"})  # 4.0
    states(**{"37": "finished", "3": "running", "8": "finished"})  # 9.0: a later message changes nothing
    assert server.node_seconds() == {"3": 0.5, "8": 1.5}
    server.node_times.clear()  # the runtime clears them per job
    assert server.node_seconds() == {}
