from __future__ import annotations

import subprocess

from supervisor import build_info

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_environment_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(build_info.COMMIT_ENV, "abc123")
    assert build_info.git_commit(tmp_path) == "abc123"


def test_reads_a_branch_ref_loose_or_packed(monkeypatch, tmp_path):
    monkeypatch.delenv(build_info.COMMIT_ENV, raising=False)
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    assert build_info.git_commit(tmp_path / "pkg" / "mod.py") == SHA
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs\n{SHA} refs/heads/main\n")
    assert build_info.git_commit(tmp_path) == SHA


def test_detached_head_and_no_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv(build_info.COMMIT_ENV, raising=False)
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / ".git" / "HEAD").write_text(SHA)
    assert build_info.git_commit(tmp_path / "repo") == SHA
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    # Somewhere with no .git above it at all ("/" has none on a test machine).
    assert build_info._read_head(lonely / ".git") is None


def test_matches_git_on_this_checkout(monkeypatch):
    monkeypatch.delenv(build_info.COMMIT_ENV, raising=False)
    try:
        expected = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                  cwd=build_info.__file__.rsplit("/", 2)[0]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        expected = "unknown"
    assert build_info.git_commit() == expected
