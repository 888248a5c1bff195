"""Nvml against a fake NVML module (no GPU in CI), and the real pynvml without a driver."""

from __future__ import annotations

import copy
import logging

import pynvml
import pytest

from supervisor.gpu.nvml import GpuStats, Nvml
from tests.support.fake_nvml import FakeGpu, FakeNvml

H100 = FakeGpu()
L40 = FakeGpu(
    name="NVIDIA L40S", uuid="GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", utilization=5,
    memory_used=1 * 2**30, memory_total=48 * 2**30, temperature=40, power_mw=80_000,
)


def started(*gpus: FakeGpu) -> tuple[Nvml, FakeNvml]:
    lib = FakeNvml([copy.deepcopy(g) for g in gpus])  # tests change them
    nvml = Nvml(lib)
    assert nvml.start()
    return nvml, lib


def events(caplog, name: str) -> list[dict]:
    return [r.fields for r in caplog.records if getattr(r, "event", None) == name]


def test_figures_in_base_units():
    nvml, _ = started(H100, L40)
    assert nvml.read([1]) == [
        GpuStats(
            index=1, name="NVIDIA L40S", uuid=L40.uuid, utilization_ratio=0.05,
            memory_used_bytes=2**30, memory_total_bytes=48 * 2**30, temperature_celsius=40.0, power_watts=80.0,
        )
    ]


def test_a_gpu_is_found_by_whole_or_abbreviated_uuid():
    nvml, _ = started(H100, L40)
    assert [g.index for g in nvml.read([L40.uuid])] == [1]
    assert [g.index for g in nvml.read(["GPU-aaaaaaaa"])] == [1]
    assert [g.index for g in nvml.read([H100.uuid[:12]])] == [0]


def test_a_gpu_nvml_does_not_see_is_left_out_and_logged_once(caplog):
    nvml, _ = started(H100)
    with caplog.at_level(logging.INFO):
        assert nvml.read([3]) == []
        assert nvml.read(["GPU-ffff"]) == []
        assert nvml.read([3]) == []
    failures = events(caplog, "gpu_read_failed")
    assert [f["gpu"] for f in failures] == [3, "GPU-ffff"]
    assert "no GPU with index 3" in failures[0]["reason"]


@pytest.mark.parametrize("error", [pynvml.NVMLError_GpuIsLost, pynvml.NVMLError_Unknown])
def test_a_lost_gpu_drops_out_of_the_read_and_the_others_stay(caplog, error):
    nvml, lib = started(H100, L40)
    lib.gpus[0].failing["nvmlDeviceGetMemoryInfo"] = error
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            assert [g.index for g in nvml.read([0, 1])] == [1]
    # Logged when it started failing, not on every read.
    failures = events(caplog, "gpu_read_failed")
    assert len(failures) == 1 and failures[0]["gpu"] == 0 and error.__name__ in failures[0]["reason"]

    lib.gpus[0].failing.clear()
    with caplog.at_level(logging.INFO):
        assert [g.index for g in nvml.read([0, 1])] == [0, 1]
        assert [g.index for g in nvml.read([0, 1])] == [0, 1]
    assert events(caplog, "gpu_read_recovered") == [{"gpu": 0}]


def test_a_different_error_on_a_failing_gpu_is_logged_again(caplog):
    nvml, lib = started(H100)
    lib.gpus[0].failing["nvmlDeviceGetName"] = pynvml.NVMLError_Unknown
    with caplog.at_level(logging.INFO):
        nvml.read([0])
        lib.gpus[0].failing["nvmlDeviceGetName"] = pynvml.NVMLError_GpuIsLost
        nvml.read([0])
        nvml.read([0])
    assert len(events(caplog, "gpu_read_failed")) == 2


def test_figures_a_gpu_does_not_offer_are_none_and_the_gpu_stays():
    nvml, lib = started(H100)
    for call in ("nvmlDeviceGetPowerUsage", "nvmlDeviceGetTemperature", "nvmlDeviceGetUtilizationRates"):
        lib.gpus[0].failing[call] = pynvml.NVMLError_NotSupported
    (gpu,) = nvml.read([0])
    assert (gpu.power_watts, gpu.temperature_celsius, gpu.utilization_ratio) == (None, None, None)
    assert gpu.memory_total_bytes == 80 * 2**30


def test_a_non_nvml_exception_does_not_escape_the_read():
    nvml, lib = started(H100, L40)
    lib.gpus[0].failing["nvmlDeviceGetUUID"] = ZeroDivisionError
    assert [g.index for g in nvml.read([0, 1])] == [1]


def test_initialised_once_and_shut_down_on_close():
    nvml, lib = started(H100)
    assert nvml.start() and lib.init_calls == 1
    nvml.close()
    assert not lib.initialised and not nvml.up and nvml.read([0]) == []


def test_without_a_driver_it_degrades_and_says_why_once(caplog):
    lib = FakeNvml([H100], init_error=pynvml.NVMLError_LibraryNotFound)
    nvml = Nvml(lib)
    with caplog.at_level(logging.INFO):
        assert not nvml.start()
        assert not nvml.start()
    assert lib.init_calls == 1  # no retry per request
    assert not nvml.up and nvml.read([0]) == []
    (unavailable,) = events(caplog, "nvml_unavailable")
    assert "NVMLError_LibraryNotFound" in unavailable["reason"]
    nvml.close()  # harmless when NVML never started


def test_the_real_pynvml_on_this_machine(caplog):
    """The real module: a GPU machine reads its GPUs; this CI machine has no driver and degrades."""
    nvml = Nvml()
    with caplog.at_level(logging.INFO):
        up = nvml.start()
    try:
        if up:
            assert nvml.read([0])[0].memory_total_bytes > 0
        else:
            assert nvml.read([0]) == []
            assert nvml.reason is not None and "NVMLError" in nvml.reason
            assert len(events(caplog, "nvml_unavailable")) == 1
    finally:
        nvml.close()


def test_a_read_stuck_in_the_driver_does_not_hold_up_later_reads(caplog, monkeypatch):
    import threading

    import supervisor.gpu.nvml as nvml_module

    monkeypatch.setattr(nvml_module, "LOCK_TIMEOUT_S", 0.1)
    nvml, lib = started(H100)
    inside, release = threading.Event(), threading.Event()
    real = lib.nvmlDeviceGetMemoryInfo

    def hang_once(handle):
        inside.set()
        release.wait(30)
        return real(handle)

    lib.nvmlDeviceGetMemoryInfo = hang_once
    stuck = threading.Thread(target=nvml.read, args=([0],))
    stuck.start()
    try:
        assert inside.wait(10)
        with caplog.at_level(logging.ERROR):
            assert nvml.read([0]) == []  # gives up on the lock, reports no GPU
            assert nvml.read([0]) == []
        assert len(events(caplog, "nvml_stuck")) == 1
        nvml.close()  # gives up too, never hangs the node's stop
    finally:
        release.set()
        stuck.join(10)
    lib.nvmlDeviceGetMemoryInfo = real


# --- memory for a recycle's overlap decision -------------------------------------------------


def test_memory_of_a_gpu_and_of_one_process_on_it():
    nvml, lib = started(H100, L40)
    lib.gpus[1].processes = {4242: 3 * 2**30, 77: 2**30}
    memory = nvml.memory_of(L40.uuid[:12], 4242)  # an abbreviated UUID, as CUDA takes it
    assert memory.free_bytes == 47 * 2**30 and memory.used_bytes == 2**30 and memory.process_bytes == 3 * 2**30
    assert nvml.memory_of(1, 999).process_bytes is None  # not among NVML's processes


def test_memory_of_raises_where_there_are_no_figures():
    from supervisor.gpu.nvml import GpuNotFound, NvmlUnavailable

    with pytest.raises(NvmlUnavailable):
        Nvml(FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound)).memory_of(0, 1)  # never started
    nvml, lib = started(H100)
    with pytest.raises(GpuNotFound):
        nvml.memory_of(3, 1)
    lib.gpus[0].failing["nvmlDeviceGetComputeRunningProcesses"] = pynvml.NVMLError_GpuIsLost
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.memory_of(0, 1)
