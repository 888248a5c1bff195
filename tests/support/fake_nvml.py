"""A stand-in for the `pynvml` module with the functions and error classes the node uses.

Built from the real module's error classes, so that code catching `pynvml.NVMLError_*`
behaves the same against the fake. Tests set GPUs, take them away or make a call fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-1111-2222-3333-444444444444"
    utilization: int = 37  # percent, as NVML reports it
    memory_used: int = 20 * 2**30
    memory_total: int = 80 * 2**30
    temperature: int = 51
    power_mw: int = 312_500
    # Compute processes on it: pid -> bytes it holds (None: NVML cannot say, as under WDDM).
    processes: dict[int, int | None] = field(default_factory=dict)
    # Function name -> error class raised by that call for this GPU.
    failing: dict[str, type] = field(default_factory=dict)


class FakeNvml:
    """Module-like: `Nvml(FakeNvml([...]))`."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVMLError_Unknown = pynvml.NVMLError_Unknown
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
    NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized
    NVMLError_InvalidArgument = pynvml.NVMLError_InvalidArgument
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, gpus: list[FakeGpu] | None = None, init_error: type | None = None) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error
        self.initialised = False
        self.init_calls = 0
        self.calls = 0

    # --- library ----------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error()
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return "580.95.05"

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise self.NVMLError_InvalidArgument()
        return index  # handles are opaque to callers; the index will do

    # --- per device -------------------------------------------------------------------

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        self._device("nvmlDeviceGetIndex", handle)
        return handle

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._device("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: int):
        gpu = self._device("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(used=gpu.memory_used, total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list:
        gpu = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu.processes.items()]

    def nvmlDeviceGetUtilizationRates(self, handle: int):
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=gpu.utilization, memory=10)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._device("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._device("nvmlDeviceGetPowerUsage", handle).power_mw

    def _check(self) -> None:
        self.calls += 1
        if not self.initialised:
            raise self.NVMLError_Uninitialized()

    def _device(self, function: str, handle: int) -> FakeGpu:
        self._check()
        gpu = self.gpus[handle]
        error = gpu.failing.get(function)
        if error is not None:
            raise error()
        return gpu
