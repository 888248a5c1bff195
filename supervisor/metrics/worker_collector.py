"""The worker process's own figures (resident memory, CPU seconds), read through psutil.

prometheus_client's ProcessCollector only knows the process it runs in (the supervisor);
the worker is a child with a pid that changes on every restart, so it is looked up at
scrape time. Its CPU counter starts again from 0 with each new worker, which Prometheus'
rate() reads as an ordinary counter reset.
"""

from __future__ import annotations

from typing import Callable, Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from supervisor.metrics.registry import PREFIX


class WorkerProcessCollector(Collector):
    def __init__(self, worker_pid: Callable[[], int | None]) -> None:
        self.worker_pid = worker_pid
        self._process: psutil.Process | None = None

    def describe(self) -> list:
        return list(self._families(None, None))

    def collect(self) -> Iterator:
        rss = cpu = None
        process = self._lookup(self.worker_pid())
        if process is not None:
            try:
                with process.oneshot():
                    rss = float(process.memory_info().rss)
                    times = process.cpu_times()
                    cpu = times.user + times.system
            except psutil.Error:  # it died between the pid lookup and the read
                rss = cpu = None
        return self._families(rss, cpu)

    def _lookup(self, pid: int | None) -> psutil.Process | None:
        # One psutil.Process per worker: it remembers the start time, so a reused pid is caught.
        if pid is None:
            return None
        if self._process is None or self._process.pid != pid:
            try:
                self._process = psutil.Process(pid)
            except psutil.Error:
                return None
        return self._process

    @staticmethod
    def _families(rss: float | None, cpu: float | None) -> Iterator:
        # 0 while no worker runs: the gauge keeps its series, so a dashboard shows the gap.
        yield GaugeMetricFamily(
            f"{PREFIX}_worker_resident_memory_bytes", "Resident memory of the worker process", value=rss or 0.0
        )
        family = CounterMetricFamily(
            f"{PREFIX}_worker_cpu_seconds", "CPU time (user + system) of the current worker process"
        )
        if cpu is not None:
            family.add_metric([], cpu)
        yield family
