"""Where the two processes meet: a private runtime directory and one ipc:// endpoint.

The supervisor binds a ROUTER socket; each worker generation connects a DEALER with a
fresh identity, so messages from a dead generation can be told apart and dropped.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import psutil

# Unix socket paths longer than this fail to bind (sun_path is 108 bytes with the NUL).
MAX_IPC_PATH = 107
PREFIX = "gpusrv-"
SOCKET_NAME = "worker.sock"
# `gpusrv-<owner pid>-<random>`: the owner can be checked after a crash. Older versions
# made `gpusrv-<random>` (no pid).
_OWNED = re.compile(rf"^{PREFIX}(\d+)-")


def _parents(base: str | None) -> list[str | None]:
    return [base] if base else [os.environ.get("XDG_RUNTIME_DIR"), None]


def make_runtime_dir(base: str | None = None) -> Path:
    """A fresh directory only this user can enter (mkdtemp creates it 0700), named after
    the process that owns it.

    Prefers $XDG_RUNTIME_DIR, falls back to the system temp dir when that path would
    make the socket path too long.
    """
    for parent in _parents(base):
        if parent is not None and not os.path.isdir(parent):
            continue
        path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
        if len(str(path / SOCKET_NAME)) <= MAX_IPC_PATH:
            os.chmod(path, 0o700)
            return path
        shutil.rmtree(path, ignore_errors=True)
    raise RuntimeError("no runtime directory short enough for a Unix socket path")


def endpoint_in(runtime_dir: Path) -> str:
    return f"ipc://{runtime_dir / SOCKET_NAME}"


def remove_stale_runtime_dirs(base: str | None = None) -> list[Path]:
    """Remove the runtime directories of nodes that died without cleaning up (SIGKILL,
    a crash): this user's `gpusrv-*` directories whose owner process is gone. Returns
    what was removed. A directory of a live node, another user's, or a symlink is never
    touched."""
    removed = []
    for parent in _parents(base):
        folder = Path(parent) if parent is not None else Path(tempfile.gettempdir())
        try:
            entries = list(folder.glob(f"{PREFIX}*"))
        except OSError:
            continue
        for path in entries:
            if _is_stale(path):
                shutil.rmtree(path, ignore_errors=True)
                if not path.exists():
                    removed.append(path)
    return removed


def _is_stale(path: Path) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    owned = _OWNED.match(path.name)
    if owned is None:
        return _socket_abandoned(path)  # an older version's directory: judged by its socket
    pid = int(owned.group(1))
    if pid == os.getpid():
        return False
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    # A process that started after the directory was made reuses a dead owner's pid.
    return started > info.st_mtime + 1.0


def _socket_abandoned(path: Path) -> bool:
    """True when the directory's socket exists and nobody listens on it any more."""
    sock_path = path / SOCKET_NAME
    if not sock_path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(sock_path))
        except OSError as exc:
            return exc.errno == errno.ECONNREFUSED
    return False


def remove_runtime_dir(runtime_dir: Path) -> None:
    shutil.rmtree(runtime_dir, ignore_errors=True)
