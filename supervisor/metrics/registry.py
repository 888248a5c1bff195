"""Prometheus metrics of the node (prometheus_client, one registry per node).

Gauges that mirror state (busy, queue, worker up) read it at scrape time through
callbacks, so they can never drift from what /gpu/status says. Collectors that read
figures at scrape time (`worker_collector`, `gpu_collector`) take the prefix from here.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from supervisor.worker.overlap import OverlapResult
from supervisor.worker.reasons import RestartReason

# Every metric of the node is named gpu_server_*; defined here only.
PREFIX = "gpu_server"
# HTTP answers take milliseconds; a slow one is a problem worth seeing.
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# A GPU job takes seconds to minutes.
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CALLBACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

JOB_OUTCOMES = (
    "accepted",
    "rejected_busy",
    "succeeded",
    "cancelled",
    "invalid_input",
    "worker_crashed",
    "inference_timeout",
    "out_of_memory",
    "backend_error",
    "shutdown",
)
RESTART_REASONS = tuple(reason.value for reason in RestartReason)
OVERLAP_RESULTS = tuple(result.value for result in OverlapResult)
CALLBACK_RESULTS = ("success", "retry", "failure", "undeliverable")
EVENT_TYPES = ("job.started", "job.progress")
# sent: a 2xx; failed: an error or another status; dropped: not sent (the job's previous
# event still in flight, or the node draining).
EVENT_RESULTS = ("sent", "failed", "dropped")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # the supervisor's own CPU, memory and fds
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(f"{PREFIX}_jobs", "Jobs by outcome", ["outcome"], registry=r)
        self.job_queue = Histogram(
            f"{PREFIX}_job_queue_seconds", "202 until the job's model stage began", buckets=JOB_BUCKETS, registry=r
        )
        self.job_inference = Histogram(
            f"{PREFIX}_job_inference_seconds", "Model execution only", buckets=JOB_BUCKETS, registry=r
        )
        self.job_prepare = Histogram(
            f"{PREFIX}_job_prepare_seconds", "The worker's prepare stage (decoding), before the model",
            buckets=JOB_BUCKETS, registry=r,
        )
        self.job_finish = Histogram(
            f"{PREFIX}_job_finish_seconds", "The worker's finish stage (resize, encode), after the model",
            buckets=JOB_BUCKETS, registry=r,
        )
        # Its rate is the GPU's duty cycle: the share of the time a job was in the model stage.
        self.model_busy = Counter(
            f"{PREFIX}_model_busy_seconds", "Time a job spent in the model stage (the GPU's)", registry=r
        )
        self.job_total = Histogram(
            f"{PREFIX}_job_total_seconds", "202 until the result is back", buckets=JOB_BUCKETS, registry=r
        )
        self.callback_attempts = Counter(
            f"{PREFIX}_callback_attempts", "Callback attempts by result", ["result"], registry=r
        )
        self.callback_duration = Histogram(
            f"{PREFIX}_callback_duration_seconds",
            "Time of one callback attempt",
            buckets=CALLBACK_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            f"{PREFIX}_events", "Job events (events.url) by type and result", ["type", "result"], registry=r
        )
        # Both counted from the spool's folders at scrape time, as `gpu-server spool list` does.
        self.spool_pending = Gauge(
            f"{PREFIX}_spool_pending", "Results in the spool waiting for delivery", registry=r
        )
        self.spool_dead = Gauge(
            f"{PREFIX}_spool_dead", "Dead letters in the spool (a final 4xx or 3xx): kept until replayed or deleted",
            registry=r,
        )
        self.spool_expired = Counter(
            f"{PREFIX}_spool_expired", "Results removed undelivered at spool.max_age_s", registry=r
        )
        self.spool_quarantined = Counter(
            f"{PREFIX}_spool_quarantined", "Spool files set aside as unreadable", registry=r
        )
        self.busy = Gauge(f"{PREFIX}_busy", "1 while a job holds the GPU", registry=r)
        self.queue_length = Gauge(f"{PREFIX}_queue_length", "Jobs waiting for the GPU", registry=r)
        self.worker_up = Gauge(f"{PREFIX}_worker_up", "1 while the worker process runs", registry=r)
        self.model_loaded = Gauge(f"{PREFIX}_model_loaded", "1 while the model is loaded", registry=r)
        self.worker_restarts = Counter(
            f"{PREFIX}_worker_restarts", "Worker restarts by reason", ["reason"], registry=r
        )
        self.worker_overlap = Counter(
            f"{PREFIX}_worker_overlap",
            "Recycles meant to load the next worker beside the current one, by result",
            ["result"],
            registry=r,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the labels say what runs (comfyui, comfyui_commit: the engine's; empty where none)",
            ["version", "git_commit", "backend", "model_version", "comfyui", "comfyui_commit"],
            registry=r,
        )
        # Every known label value exists from the start, so rate() works from the first scrape.
        for outcome in JOB_OUTCOMES:
            self.jobs.labels(outcome)
        for reason in RESTART_REASONS:
            self.worker_restarts.labels(reason)
        for result in OVERLAP_RESULTS:
            self.worker_overlap.labels(result)
        for result in CALLBACK_RESULTS:
            self.callback_attempts.labels(result)
        for kind in EVENT_TYPES:
            for result in EVENT_RESULTS:
                self.events.labels(kind, result)

    def bind_state(
        self,
        busy: Callable[[], bool],
        queue_length: Callable[[], int],
        worker_pid: Callable[[], int | None],
        model_loaded: Callable[[], bool],
        spool_pending: Callable[[], int] = lambda: 0,
        spool_dead: Callable[[], int] = lambda: 0,
    ) -> None:
        self.busy.set_function(lambda: float(busy()))
        self.queue_length.set_function(lambda: float(queue_length()))
        self.worker_up.set_function(lambda: float(worker_pid() is not None))
        self.model_loaded.set_function(lambda: float(model_loaded()))
        self.spool_pending.set_function(lambda: float(spool_pending()))
        self.spool_dead.set_function(lambda: float(spool_dead()))

    def set_build_info(self, version: str, git_commit: str, backend: str, model_version: str,
                       comfyui: str | None = None, comfyui_commit: str | None = None) -> None:
        self.build_info.clear()
        self.build_info.labels(version, git_commit, backend, model_version, comfyui or "", comfyui_commit or "").set(1)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_duration.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

