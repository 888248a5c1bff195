"""The process split is real: torch lives in the worker only, in its own process group."""

from __future__ import annotations

import os
import stat
from pathlib import Path


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
    sockets = [line for line in Path(f"/proc/{worker}/net/unix").read_text().splitlines() if "gpusrv-" in line]
    assert sockets, "the worker is not connected over a Unix socket in the runtime directory"
    path = Path(sockets[0].split()[-1])
    mode = stat.S_IMODE(path.parent.stat().st_mode)
    assert mode == 0o700, oct(mode)
