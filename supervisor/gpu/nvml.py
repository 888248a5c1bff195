"""GPU figures read from NVML (module `pynvml` of the `nvidia-ml-py` distribution).

NVML is initialised once; without a driver the reason is logged once and every read
answers []. A GPU that errors during a read (lost off the bus, Xid, unknown error) is left
out of that read: one bad GPU never fails a scrape. Failures are logged when a GPU starts
failing and when it recovers, not on every scrape.

NVML calls block in C (a lost GPU can make them slow), so callers run `read` off the
event loop; a lock keeps concurrent scrapes from piling up inside NVML.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Callable, Iterable, NamedTuple

from ipc.jsonlog import EventLog
from supervisor.gpu.selection import GpuRef

events = EventLog("supervisor.nvml")
# How long a read waits for another one still inside the driver before reporting no GPU.
LOCK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class GpuStats:
    """One GPU as /gpu/status shows it; None where the GPU does not support a figure."""

    index: int
    name: str
    uuid: str
    utilization_ratio: float | None
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float | None
    power_watts: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GpuNotFound(Exception):
    """The worker's GPU is not among those NVML sees (wrong index or UUID)."""


class NvmlUnavailable(Exception):
    """NVML is not up (no driver), or an earlier call is stuck in it."""


class GpuMemory(NamedTuple):
    """One GPU's memory, and what one process of ours holds of it."""

    free_bytes: int
    used_bytes: int
    process_bytes: int | None  # None: NVML does not list the process (another pid namespace) or cannot say


class Nvml:
    def __init__(self, lib: ModuleType | None = None) -> None:
        self._lib = lib
        self.up = False
        self.reason: str | None = "not started"
        self._started = False
        self._lock = threading.Lock()
        self._stuck_logged = False
        # ref -> the error it is failing with, so that a failing GPU is logged once.
        self._failing: dict[GpuRef, str] = {}

    def start(self) -> bool:
        """Initialise NVML once; later calls change nothing (no retry per request)."""
        if self._started:
            return self.up
        self._started = True
        try:
            if self._lib is None:
                import pynvml

                self._lib = pynvml
            self._lib.nvmlInit()
            driver = self._lib.nvmlSystemGetDriverVersion()
        except Exception as exc:  # NVMLError_LibraryNotFound without a driver, or anything odd
            self.reason = _describe(exc)
            events.warning("nvml_unavailable", reason=self.reason)
            return False
        self.up = True
        self.reason = None
        events.info("nvml_started", driver_version=str(driver))
        return True

    def close(self) -> None:
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            events.warning("nvml_shutdown_skipped", reason="a read is stuck in the driver")
            return
        try:
            if self.up:
                self.up = False
                self.reason = "closed"
                try:
                    self._lib.nvmlShutdown()
                except Exception as exc:
                    events.warning("nvml_shutdown_failed", reason=_describe(exc))
        finally:
            self._lock.release()

    def read(self, refs: Iterable[GpuRef]) -> list[GpuStats]:
        """The figures of the GPUs named by `refs`, skipping any that fail now. Never raises.

        A driver that hangs (a GPU fallen off the bus) holds one read forever; later reads
        give up on the lock after a while and report no GPU, so scrapes do not pile up
        threads waiting behind it."""
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            if not self._stuck_logged:
                self._stuck_logged = True
                events.error("nvml_stuck", waited_s=LOCK_TIMEOUT_S, reason="an earlier read has not returned")
            return []
        try:
            self._stuck_logged = False
            if not self.up:
                return []
            gpus = []
            for ref in refs:
                try:
                    gpus.append(self._read_one(ref))
                except Exception as exc:  # NVMLError_GpuIsLost, _Unknown, GpuNotFound, ...
                    self._note_failure(ref, exc)
                else:
                    self._note_recovery(ref)
            return gpus
        finally:
            self._lock.release()

    def memory_of(self, ref: GpuRef, pid: int) -> GpuMemory:
        """The free and used memory of one GPU, and what process `pid` holds there (for a
        recycle's overlap decision, rare: it raises rather than degrading)."""
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise NvmlUnavailable("an earlier NVML call has not returned")
        try:
            if not self.up:
                raise NvmlUnavailable(self.reason or "NVML is not initialised")
            nv = self._lib
            handle = self._handle(ref)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            held = None
            for process in nv.nvmlDeviceGetComputeRunningProcesses(handle):
                if int(process.pid) == pid and process.usedGpuMemory is not None:
                    held = (held or 0) + int(process.usedGpuMemory)  # one entry per CUDA context
            return GpuMemory(int(memory.free), int(memory.used), held)
        finally:
            self._lock.release()

    def _read_one(self, ref: GpuRef) -> GpuStats:
        nv = self._lib
        handle = self._handle(ref)
        memory = nv.nvmlDeviceGetMemoryInfo(handle)
        utilization = self._optional(nv.nvmlDeviceGetUtilizationRates, handle)
        milliwatts = self._optional(nv.nvmlDeviceGetPowerUsage, handle)
        return GpuStats(
            index=int(nv.nvmlDeviceGetIndex(handle)),
            name=str(nv.nvmlDeviceGetName(handle)),
            uuid=str(nv.nvmlDeviceGetUUID(handle)),
            utilization_ratio=utilization.gpu / 100.0 if utilization is not None else None,
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
            temperature_celsius=_float(self._optional(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)),
            power_watts=milliwatts / 1000.0 if milliwatts is not None else None,
        )

    def _handle(self, ref: GpuRef) -> Any:
        nv = self._lib
        if isinstance(ref, int):
            if ref >= nv.nvmlDeviceGetCount():
                raise GpuNotFound(f"no GPU with index {ref}")
            return nv.nvmlDeviceGetHandleByIndex(ref)
        # CUDA accepts abbreviated UUIDs; NVML's lookup wants the whole one, so match prefixes.
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            if str(nv.nvmlDeviceGetUUID(handle)).startswith(ref):
                return handle
        raise GpuNotFound(f"no GPU with UUID {ref}")

    def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A figure some GPUs do not offer (power, temperature on some boards, MIG): None."""
        try:
            return fn(*args)
        except self._lib.NVMLError_NotSupported:
            return None

    def _note_failure(self, ref: GpuRef, exc: Exception) -> None:
        reason = _describe(exc)
        if self._failing.get(ref) != reason:
            self._failing[ref] = reason
            events.warning("gpu_read_failed", gpu=ref, reason=reason)

    def _note_recovery(self, ref: GpuRef) -> None:
        if self._failing.pop(ref, None) is not None:
            events.info("gpu_read_recovered", gpu=ref)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None
