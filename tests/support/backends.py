"""Backends for tests, loaded in the real worker process by import path
(`worker.backend: tests.support.backends:Name`, settings under `model.custom`)."""

from __future__ import annotations

import threading
import time

from gpu_worker.backends.reference import ReferenceBackend
from gpu_worker.engine import BackendContext, LoadInfo


class FailingLoad:
    """Cannot load its model: the worker must report why, then exit."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    def load(self) -> LoadInfo:
        raise FileNotFoundError(f"model file {self.context.settings.get('weights', 'weights.safetensors')} is missing")

    def run(self, inputs, cancelled):  # pragma: no cover - never loaded
        raise AssertionError("unreachable")


class SlowLoad(ReferenceBackend):
    """The reference backend, after `load_seconds` of loading (hang: a very large number)."""

    def load(self) -> LoadInfo:
        time.sleep(float(self.context.settings.get("load_seconds", 3600)))
        return super().load()

    def run(self, inputs, cancelled: threading.Event):
        return super().run(inputs, cancelled)
