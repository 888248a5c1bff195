"""The GPU-only parts of bench/qwen_gpu.py, against a stand-in NVML (the whole script runs
on the CPU in tests/integration/test_qwen_gpu_script.py, GPU checks skipped)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.qwen_gpu import GpuWatch, percentile


class Nvml:
    def __init__(self) -> None:
        self.used = 1000
        self.processes: list[SimpleNamespace] = []

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self.used, total=141 * 2**30)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.processes


def test_peaks_follow_the_worker_process_and_the_device(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = Nvml()
    watch = GpuWatch("cuda:0", lib=nvml)
    assert (watch.handle, watch.name) == ("gpu0", "NVIDIA H200")
    watch.worker_pid = 42
    nvml.used, nvml.processes = 5000, [SimpleNamespace(pid=7, usedGpuMemory=900), SimpleNamespace(pid=42, usedGpuMemory=3000)]
    watch.sample()
    nvml.used, nvml.processes[1].usedGpuMemory = 4000, 2500
    watch.sample()
    assert (watch.peak_device, watch.peak_worker, watch.worker_source) == (5000, 3000, "worker process")


def test_a_worker_nvml_does_not_list_is_measured_by_the_device(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = Nvml()
    watch = GpuWatch("cuda:0", lib=nvml)
    watch.worker_pid, nvml.used = 42, 6000  # in a container NVML lists host pids
    assert watch.worker_used() == 6000
    assert watch.worker_source.startswith("device")


def test_percentiles_of_few_samples():
    assert percentile([3.0], 0.9) == 3.0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5) == 5.5
    assert percentile(list(range(1, 21)), 0.9) == 18.1
