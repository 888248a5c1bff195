"""Prometheus exposition of the NVML figures, read at scrape time (no polling thread).

A custom collector rather than gauges set by a timer: the figures are as fresh as the
scrape, nothing runs between scrapes, and a GPU that fails to read simply has no series
in that scrape.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from supervisor.gpu.selection import GpuRef
from supervisor.metrics.registry import PREFIX
from supervisor.gpu.nvml import GpuStats, Nvml

LABELS = ("gpu", "uuid", "name")
# metric name (after the prefix), help, the GpuStats field it shows.
GPU_FIGURES = (
    ("gpu_utilization_ratio", "Share of the last sample period a kernel ran on the GPU (0..1)", "utilization_ratio"),
    ("gpu_memory_used_bytes", "GPU memory in use, all processes", "memory_used_bytes"),
    ("gpu_memory_total_bytes", "GPU memory installed", "memory_total_bytes"),
    ("gpu_temperature_celsius", "GPU core temperature", "temperature_celsius"),
    ("gpu_power_watts", "GPU power draw", "power_watts"),
)


class GpuCollector(Collector):
    def __init__(self, nvml: Nvml, worker_gpus: Callable[[], Iterable[GpuRef]]) -> None:
        self.nvml = nvml
        self.worker_gpus = worker_gpus

    def describe(self) -> list[GaugeMetricFamily]:
        # Lets the registry check names at registration without touching NVML.
        return list(_families([]))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gpus = self.nvml.read(self.worker_gpus())
        return _families(gpus, up=self.nvml.up)


def _families(gpus: list[GpuStats], up: bool = False) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily(f"{PREFIX}_nvml_up", "1 when NVML answers (a driver is present)", value=float(up))
    for name, help_text, field in GPU_FIGURES:
        family = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=LABELS)
        for gpu in gpus:
            value = getattr(gpu, field)
            if value is not None:  # a figure this GPU does not offer has no series
                family.add_metric([str(gpu.index), gpu.uuid, gpu.name], float(value))
        yield family
