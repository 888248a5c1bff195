from __future__ import annotations

import os
import socket
import stat
import subprocess

from ipc.transport import MAX_IPC_PATH, endpoint_in, make_runtime_dir, remove_runtime_dir, remove_stale_runtime_dirs


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


def test_runtime_dir_is_named_after_its_owner(tmp_path):
    runtime = make_runtime_dir(str(tmp_path))
    try:
        assert runtime.name.startswith(f"gpusrv-{os.getpid()}-")
    finally:
        remove_runtime_dir(runtime)


def dead_pid() -> int:
    """A pid no process has now: a child that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_runtime_dirs_are_removed_and_nothing_else(tmp_path):
    dead = tmp_path / f"gpusrv-{dead_pid()}-abc"
    dead.mkdir(mode=0o700)
    (dead / "worker.sock").write_text("")
    live = tmp_path / f"gpusrv-{os.getppid()}-def"  # the parent of this test process lives
    live.mkdir(mode=0o700)
    mine = make_runtime_dir(str(tmp_path))
    other_user = tmp_path / f"gpusrv-{dead_pid()}-ghi"
    if os.getuid() == 0:  # as root (CI), a folder of another user can be made
        other_user.mkdir()
        os.chown(other_user, 65534, 65534)
    link = tmp_path / f"gpusrv-{dead_pid()}-lnk"
    link.symlink_to(dead)
    not_ours = tmp_path / "something-else"
    not_ours.mkdir()
    removed = remove_stale_runtime_dirs(str(tmp_path))
    assert removed == [dead]
    assert live.is_dir() and mine.is_dir() and not_ours.is_dir() and link.is_symlink()
    assert other_user.is_dir() or os.getuid() != 0
    remove_runtime_dir(mine)


def test_a_dir_of_the_old_naming_goes_only_when_nobody_listens_on_its_socket(tmp_path):
    abandoned = tmp_path / "gpusrv-oldabcd"
    abandoned.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(abandoned / "worker.sock"))  # bound, never listening: refused
    listening = tmp_path / "gpusrv-oldefgh"
    listening.mkdir(mode=0o700)
    no_socket = tmp_path / "gpusrv-oldijkl"
    no_socket.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(listening / "worker.sock"))
        server.listen()
        assert remove_stale_runtime_dirs(str(tmp_path)) == [abandoned]
    assert listening.is_dir() and no_socket.is_dir()
