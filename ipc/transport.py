"""Where the two processes meet: a private runtime directory and one ipc:// endpoint.

The supervisor binds a ROUTER socket; each worker generation connects a DEALER with a
fresh identity, so messages from a dead generation can be told apart and dropped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Unix socket paths longer than this fail to bind (sun_path is 108 bytes with the NUL).
MAX_IPC_PATH = 107


def make_runtime_dir(base: str | None = None) -> Path:
    """A fresh directory only this user can enter (mkdtemp creates it 0700).

    Prefers $XDG_RUNTIME_DIR, falls back to the system temp dir when that path would
    make the socket path too long.
    """
    candidates = [base] if base else [os.environ.get("XDG_RUNTIME_DIR"), None]
    for parent in candidates:
        if parent is not None and not os.path.isdir(parent):
            continue
        path = Path(tempfile.mkdtemp(prefix="gpusrv-", dir=parent))
        if len(str(path / "worker.sock")) <= MAX_IPC_PATH:
            os.chmod(path, 0o700)
            return path
        shutil.rmtree(path, ignore_errors=True)
    raise RuntimeError("no runtime directory short enough for a Unix socket path")


def endpoint_in(runtime_dir: Path) -> str:
    return f"ipc://{runtime_dir / 'worker.sock'}"


def remove_runtime_dir(runtime_dir: Path) -> None:
    shutil.rmtree(runtime_dir, ignore_errors=True)
