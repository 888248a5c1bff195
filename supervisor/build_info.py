"""What build is running: the package version and the git commit it came from."""

from __future__ import annotations

import os
import re
from pathlib import Path

from supervisor import __version__

COMMIT_ENV = "GPU_SERVER_GIT_COMMIT"
_SHA = re.compile(r"[0-9a-f]{40}")


def version() -> str:
    return __version__


def git_commit(start: Path | None = None) -> str:
    """The commit: $GPU_SERVER_GIT_COMMIT (set by an image build), else read from the
    checkout this package runs from (no git binary needed), else "unknown"."""
    from_env = os.environ.get(COMMIT_ENV, "").strip()
    if from_env:
        return from_env
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        dot_git = folder / ".git"
        if dot_git.exists():
            return _read_head(dot_git) or "unknown"
    return "unknown"


def _read_head(dot_git: Path) -> str | None:
    try:
        if dot_git.is_file():  # a worktree: ".git" names the real git dir
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            dot_git = (dot_git.parent / text.split(":", 1)[1].strip()).resolve()
        head = (dot_git / "HEAD").read_text().strip()
        if _SHA.fullmatch(head):
            return head
        if not head.startswith("ref:"):
            return None
        ref = head.split(":", 1)[1].strip()
        common = dot_git
        commondir = dot_git / "commondir"
        if commondir.exists():
            common = (dot_git / commondir.read_text().strip()).resolve()
        for base in (dot_git, common):
            ref_file = base / ref
            if ref_file.exists():
                sha = ref_file.read_text().strip()
                return sha if _SHA.fullmatch(sha) else None
        packed = common / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.fullmatch(sha):
                    return sha
    except OSError:
        return None
    return None
