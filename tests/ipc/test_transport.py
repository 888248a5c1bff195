from __future__ import annotations

import os
import stat

from ipc.transport import MAX_IPC_PATH, endpoint_in, make_runtime_dir, remove_runtime_dir


def test_runtime_dir_is_private_and_its_socket_path_short_enough(tmp_path):
    runtime = make_runtime_dir(str(tmp_path))
    try:
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
        endpoint = endpoint_in(runtime)
        assert endpoint.startswith("ipc://") and len(endpoint.removeprefix("ipc://")) <= MAX_IPC_PATH
    finally:
        remove_runtime_dir(runtime)
    assert not runtime.exists()


def test_a_base_too_deep_for_a_socket_path_is_refused(tmp_path):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    try:
        make_runtime_dir(str(deep))
    except RuntimeError:
        pass
    else:
        raise AssertionError("expected a RuntimeError for a too-long socket path")
    assert os.listdir(deep) == []  # nothing left behind
