"""Measures what `auto` overlap decides on (`overlap.decide`): the current worker's memory
footprint and the free memory of the same kind, at the moment a recycle is asked.

A CUDA worker: NVML's per-process GPU memory for the worker, and the free memory of its
GPU. NVML reports host pids, so inside a container without the host's pid namespace the
worker is not found by its pid; then everything used on that GPU stands in for its
footprint (an upper bound: it may say no where there was room, never the reverse).
A CPU worker: its resident set (psutil) against the RAM available to new processes.

Blocking calls (NVML, /proc): the shell runs `measure` in a thread.
"""

from __future__ import annotations

import os

import psutil

from supervisor.gpu.selection import worker_gpus
from supervisor.gpu.nvml import Nvml
from supervisor.worker.overlap import MemoryFigures


class MemoryProbe:
    def __init__(self, nvml: Nvml) -> None:
        self.nvml = nvml

    def measure(self, pid: int, device: str) -> MemoryFigures:
        """Figures for the worker `pid`, which reported `device` when it got ready. Never raises."""
        gpus = worker_gpus(device, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if device.startswith("cuda"):
            if not gpus:
                return MemoryFigures.unknown("gpu", f"{device} is not among CUDA_VISIBLE_DEVICES")
            return self._gpu(gpus[0], pid)
        return self._ram(pid)

    def _gpu(self, ref, pid: int) -> MemoryFigures:
        try:
            memory = self.nvml.memory_of(ref, pid)
        except Exception as exc:  # NVML down, a GPU lost, a driver error: no figures, no overlap
            return MemoryFigures.unknown("gpu", f"NVML: {type(exc).__name__}: {exc}")
        if memory.process_bytes is not None:
            return MemoryFigures("gpu", memory.process_bytes, memory.free_bytes, f"NVML, worker process {pid}")
        return MemoryFigures(
            "gpu", memory.used_bytes, memory.free_bytes,
            f"NVML lists no process {pid} (another pid namespace?): all memory used on GPU {ref}",
        )

    @staticmethod
    def _ram(pid: int) -> MemoryFigures:
        try:
            rss = psutil.Process(pid).memory_info().rss
            available = psutil.virtual_memory().available
        except psutil.Error as exc:
            return MemoryFigures.unknown("ram", f"psutil: {type(exc).__name__}: {exc}")
        return MemoryFigures("ram", int(rss), int(available), f"resident set of worker process {pid}")
