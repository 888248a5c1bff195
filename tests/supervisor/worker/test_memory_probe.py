"""What `auto` overlap measures (supervisor/worker/memory_probe.py): NVML against a fake module for
a CUDA worker, psutil on a real process for a CPU one."""

from __future__ import annotations

import os

import psutil
import pytest

from supervisor.worker.memory_probe import MemoryProbe
from supervisor.gpu.nvml import Nvml
from supervisor.worker.overlap import GiB
from tests.support.fake_nvml import FakeGpu, FakeNvml


def probe(*gpus: FakeGpu) -> MemoryProbe:
    nvml = Nvml(FakeNvml(list(gpus)))
    assert nvml.start()
    return MemoryProbe(nvml)


@pytest.fixture(autouse=True)
def all_gpus_visible(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_a_cuda_worker_is_measured_by_its_own_process_on_its_own_gpu():
    other = FakeGpu(uuid="GPU-other", memory_used=70 * GiB)
    mine = FakeGpu(uuid="GPU-mine", memory_used=45 * GiB, memory_total=141 * GiB, processes={1234: 40 * GiB})
    figures = probe(other, mine).measure(1234, "cuda:1")
    assert (figures.memory, figures.footprint_bytes, figures.free_bytes) == ("gpu", 40 * GiB, 96 * GiB)
    assert figures.error is None and "1234" in figures.source


def test_the_cuda_ordinal_is_read_through_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    first, second = FakeGpu(uuid="GPU-0"), FakeGpu(uuid="GPU-1", memory_used=10 * GiB, processes={9: 8 * GiB})
    figures = probe(first, second).measure(9, "cuda:0")  # torch's cuda:0 is the machine's GPU 1
    assert figures.footprint_bytes == 8 * GiB and figures.free_bytes == 70 * GiB


def test_a_worker_nvml_does_not_list_counts_as_all_the_memory_used_on_its_gpu():
    # In a container without the host's pid namespace NVML reports host pids.
    figures = probe(FakeGpu(memory_used=45 * GiB, processes={777777: 40 * GiB})).measure(1234, "cuda")
    assert figures.footprint_bytes == 45 * GiB and "all memory used" in figures.source


def test_no_driver_or_a_device_beyond_the_visible_ones_gives_no_figures(monkeypatch):
    figures = MemoryProbe(Nvml(FakeNvml([]))).measure(1234, "cuda:0")  # NVML never started
    assert figures.error is not None and figures.footprint_bytes is None and figures.memory == "gpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert "not among CUDA_VISIBLE_DEVICES" in (probe(FakeGpu()).measure(1, "cuda:1").error or "")


def test_a_cpu_worker_is_measured_by_its_resident_set_against_available_ram():
    figures = MemoryProbe(Nvml(FakeNvml([]))).measure(os.getpid(), "cpu")
    assert figures.memory == "ram" and figures.error is None
    assert figures.footprint_bytes == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)
    assert 0 < figures.free_bytes <= psutil.virtual_memory().total


def test_a_cpu_worker_gone_gives_no_figures():
    gone = psutil.Popen(["true"])
    gone.wait()
    figures = MemoryProbe(Nvml(FakeNvml([]))).measure(gone.pid, "cpu")
    assert figures.error is not None and figures.footprint_bytes is None
