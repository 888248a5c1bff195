"""The process split is real: torch lives in the worker only, in its own process group."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

from tests.support.node import TOKEN, NodeProcess
from tests.support.processes import wait_gone


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_supervisor_never_loads_torch_and_the_worker_does(node):
    worker = node.worker_pid()
    assert "libtorch" in mapped_libraries(worker)  # so the check below can fail
    assert "libtorch" not in mapped_libraries(node.pid)
    assert "libcuda" not in mapped_libraries(node.pid)


def test_worker_runs_in_its_own_process_group_and_session(node):
    worker = node.worker_pid()
    assert os.getpgid(worker) == worker
    assert os.getsid(worker) == worker
    assert os.getpgid(node.pid) != os.getpgid(worker)
    assert int(Path(f"/proc/{worker}/stat").read_text().split(") ")[1].split()[1]) == node.pid  # parent


def test_ipc_endpoint_lives_in_a_private_directory(node):
    worker = node.worker_pid()
    # /proc/PID/net/unix lists every Unix socket of the network namespace: this node's
    # runtime directory is named after its supervisor's pid (other nodes may run beside it).
    sockets = [
        line for line in Path(f"/proc/{worker}/net/unix").read_text().splitlines() if f"gpusrv-{node.pid}-" in line
    ]
    assert sockets, "the worker is not connected over a Unix socket in the runtime directory"
    path = Path(sockets[0].split()[-1])
    mode = stat.S_IMODE(path.parent.stat().st_mode)
    assert mode == 0o700, oct(mode)


def test_worker_does_not_outlive_a_supervisor_killed_with_sigkill(tmp_path, receiver):
    victim = NodeProcess(tmp_path, receiver.url).start()
    worker = victim.worker_pid()
    victim.signal(signal.SIGKILL)
    victim.wait_exit(10)
    # The contract: gone within 5 s of its supervisor, by itself (PR_SET_PDEATHSIG).
    assert wait_gone(worker, timeout=5), "the worker outlived its supervisor"


def test_the_worker_never_sees_the_supervisors_secrets_in_its_environment(tmp_path, receiver):
    # As deployed (Kubernetes, systemd): the tokens reach the supervisor as environment
    # variables read through `${VAR}`. The worker runs the engine and any custom nodes it
    # loads; none of them needs a token, so none is in its environment.
    secrets = {
        "GPU_SERVER_TOKEN": TOKEN,
        "GPU_SERVER_CALLBACK_TOKEN": "callback-token-from-the-environment",
        "GPU_SERVER_SIGNING_SECRET": "whsec_c2VjcmV0LWZvci10aGUtc2lnbmF0dXJlcw==",
    }
    overrides = {
        "auth": {"tokens": ["${GPU_SERVER_TOKEN}"]},
        "callback": {"token": "${GPU_SERVER_CALLBACK_TOKEN}", "signing_secret": "${GPU_SERVER_SIGNING_SECRET}"},
    }
    env = {**secrets, "GPU_SERVER_HARMLESS": "kept-for-the-worker"}
    node = NodeProcess(tmp_path, receiver.url, overrides, env=env).start()
    try:
        environ = dict(
            entry.split(b"=", 1) for entry in Path(f"/proc/{node.worker_pid()}/environ").read_bytes().split(b"\0") if entry
        )
    finally:
        assert node.stop() == 0, node.tail()
    assert environ.get(b"GPU_SERVER_HARMLESS") == b"kept-for-the-worker"  # so the check below can fail
    leaked = [name for name, value in secrets.items() if name.encode() in environ or value.encode() in environ.values()]
    assert not leaked, leaked
