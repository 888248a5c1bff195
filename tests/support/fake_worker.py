"""A worker that speaks the protocol but misbehaves on purpose, for the supervisor's tests.

Started by WorkerSupervisor in place of `python -m gpu_worker`; reads the same spec from
the environment. `backend_settings["scenario"]` says what it does after Ready when a job
arrives:
- `garbage_result`: answers with a frame that is not a message;
- `exit_during_job`: exits with status 3;
- `wrong_job_id`: reports the result of another job, then the right one.
"""

from __future__ import annotations

import os
import sys

import zmq

sys.path.insert(0, os.getcwd())

from ipc import codec  # noqa: E402
from ipc.messages import (  # noqa: E402
    PROTOCOL_VERSION, SPEC_ENV, Hello, JobSucceeded, Ready, RunJob, Shutdown, decode_spec,
)


def main() -> int:
    spec = decode_spec(os.environ[SPEC_ENV])
    scenario = spec.backend_settings["scenario"]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, spec.worker_id.encode())
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(spec.endpoint)
    sock.send_multipart(codec.encode(Hello(protocol=PROTOCOL_VERSION, worker_id=spec.worker_id, pid=os.getpid())))
    sock.send_multipart(codec.encode(Ready(backend="fake", model_version="fake-1", device="cpu", load_time_s=0.0)))
    decoder = codec.supervisor_message_decoder()
    while True:
        message, _ = decoder.decode(sock.recv_multipart())
        if isinstance(message, Shutdown):
            return 0
        if not isinstance(message, RunJob):
            continue
        if scenario == "garbage_result":
            sock.send_multipart([b"\xc1 not msgpack"])
        elif scenario == "exit_during_job":
            return 3
        elif scenario == "wrong_job_id":
            for job_id in ("someone-else", message.job_id):
                result = JobSucceeded(job_id=job_id, content_type="image/png", width=1, height=1, inference_ms=1.0)
                sock.send_multipart(codec.encode(result, b"png"))


if __name__ == "__main__":
    sys.exit(main())
