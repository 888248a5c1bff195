"""The real worker process (`python -m gpu_worker`) driven by the test as its supervisor.

For what only the wire can pin down: a cancel that lands at a chosen moment (mid-graph, or
together with its job), and start-up checks where only the worker's answer matters (Ready,
or StartupFailed with its reason and then its exit status). The test binds the ROUTER
socket, reads Hello then Ready or StartupFailed, and sends RunJob / CancelJob / Shutdown
itself. (Through the real node instead: tests/support/node.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from ipc import codec, transport
from ipc.messages import (
    SPEC_ENV, Heartbeat, Hello, JobPrepared, JobProgress, ModelDone, ModelStarted, Shutdown, WorkerSpec, encode_spec,
)
from tests.support.logfile import read_events, wait_for_event
from tests.support.node import REPO


class WorkerHarness:
    def __init__(self, workdir: Path, backend: str, settings: dict, config_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.runtime_dir = transport.make_runtime_dir()
        self.endpoint = transport.endpoint_in(self.runtime_dir)
        self.spec = WorkerSpec(
            worker_id="harness-1", endpoint=self.endpoint, parent_pid=os.getpid(), node_id="test-node",
            backend=backend, device="cpu", heartbeat_interval_s=0.5, max_pixels=36_000_000,
            config_dir=str(config_dir or workdir), backend_settings=settings,
        )
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.decoder = codec.worker_message_decoder()
        self.stdout_path = workdir / "worker.stdout.log"
        self.process: subprocess.Popen | None = None
        self.identity: bytes | None = None
        self.progress: list[JobProgress] = []  # every progress report, in order
        self.stages: list[Any] = []  # every JobPrepared, ModelStarted and ModelDone, in order

    def start(self) -> WorkerHarness:
        self.sock.bind(self.endpoint)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gpu_worker"], cwd=REPO,
            stdout=self.stdout_path.open("wb"), stderr=(self.workdir / "worker.stderr.log").open("wb"),
            env={**os.environ, SPEC_ENV: encode_spec(self.spec), "PYTHONUNBUFFERED": "1"},
        )
        hello = self.receive(timeout=60)
        assert isinstance(hello, Hello), hello
        return self

    def receive(self, timeout: float = 120.0, skip_heartbeats: bool = True) -> Any:
        """The next message from the worker (Ready, StartupFailed, JobSucceeded, ...);
        progress reports are kept in `progress`, a job's stages in `stages`, not returned."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(left * 1000):
                raise AssertionError(f"no message from the worker within {timeout} s\n{self.tail()}")
            identity, *frames = self.sock.recv_multipart()
            self.identity = identity
            message, _ = self.decoder.decode(frames)
            if skip_heartbeats and isinstance(message, Heartbeat):
                continue
            if isinstance(message, JobProgress):
                self.progress.append(message)
                continue
            if isinstance(message, (JobPrepared, ModelStarted, ModelDone)):
                self.stages.append(message)
                continue
            return message

    def send(self, message, *blobs) -> None:
        assert self.identity is not None, "the worker has not said hello"
        self.sock.send_multipart([self.identity, *codec.encode(message, *blobs)])

    def events(self, name: str) -> list[dict]:
        return read_events(self.stdout_path, name)

    def wait_event(self, name: str, timeout: float = 60.0, **match: Any) -> dict:
        return wait_for_event(self.stdout_path, name, timeout, self.tail, **match)

    def stop(self) -> int | None:
        if self.process is not None and self.process.poll() is None:
            if self.identity is not None:
                self.send(Shutdown())
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.sock.close()
        self.ctx.term()
        transport.remove_runtime_dir(self.runtime_dir)
        return None if self.process is None else self.process.returncode

    def tail(self, lines: int = 40) -> str:
        out = "\n".join(self.stdout_path.read_text(errors="replace").splitlines()[-lines:])
        err_path = self.workdir / "worker.stderr.log"
        err = err_path.read_text(errors="replace")[-3000:] if err_path.exists() else ""
        return f"--- worker stdout\n{out}\n--- worker stderr\n{err}"
