"""The engine's per-start folder (its input, output, temp and user folders) in TMPDIR.

ComfyUI's defaults point into its own checkout (or site-packages, when vendored), so each
worker start makes a folder of its own: `gpu-server-comfyui-<pid>-<random>`. The worker
removes it when it exits; a worker that was killed (watchdog, out-of-memory killer, its
supervisor's death) cannot, so each start also removes the folders of workers whose process
is gone. The pid in the name is what makes that safe beside other nodes' live workers
sharing TMPDIR. (torch's `torchinductor_<user>` in TMPDIR is left alone: it is torch's
compile cache, shared by every torch process of the user, a next worker's included.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "gpu-server-comfyui-"
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")


def make() -> str:
    """A new folder for this process, after removing those of workers that are gone."""
    sweep()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")


def remove(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def sweep(parent: str | None = None) -> list[str]:
    """Remove the folders whose owning process is gone; the paths removed."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(PREFIX + "*"):
        match = _OWNED.match(path.name)
        if match is None or not path.is_dir() or _alive(int(match.group(1))):
            continue  # not ours to judge (no pid in its name), or its worker still runs
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
