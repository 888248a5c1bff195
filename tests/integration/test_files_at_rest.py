"""What the node leaves on disk and in its logs: results readable by its own user only,
no runtime folder left behind by a killed node, no credential of a configured URL in a log."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

from tests.support.client import submit, tryon_form
from tests.support.node import NodeProcess
from tests.support.processes import wait_gone
from tests.support.receiver import Reply


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_spool_files_are_0600_in_0700_folders(tmp_path, receiver, http):
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)  # as an older version left it
    os.chmod(spool, 0o755)
    receiver.answer_for["rest-pending"] = lambda: Reply(503)  # stays in the spool
    receiver.answer_for["rest-dead"] = lambda: Reply(404)  # a dead letter
    overrides = {"callback": {"max_retries": 0}, "spool": {"retry_initial_s": 3600, "retry_max_s": 3600}}
    node = NodeProcess(tmp_path, receiver.url, overrides).start()
    try:
        for job_id in ("rest-pending", "rest-dead"):
            status, _, body = await submit(http, node.base_url, tryon_form(job_id, config={"steps": 1}))
            assert status == 202, body
            node.wait_event("callback_failed", job_id=job_id)
    finally:
        assert node.stop() == 0, node.tail()
    for folder in (spool, spool / "tmp", spool / "dead", spool / "quarantine"):
        assert mode(folder) == 0o700, (folder, oct(mode(folder)))
    (pending,) = spool.glob("rest-pending~*.cb")
    (dead,) = (spool / "dead").glob("rest-dead~*.cb")
    assert mode(pending) == 0o600 and mode(dead) == 0o600, (oct(mode(pending)), oct(mode(dead)))


def test_runtime_folders_of_a_killed_node_are_removed_at_the_next_start(tmp_path, receiver):
    runtime_parent = tmp_path / "xdg"
    runtime_parent.mkdir()
    # Both places a node looks (its own runtime folder, and leftovers in the temp dir) are
    # this test's: leftovers of other runs on the machine are not its business.
    env = {"XDG_RUNTIME_DIR": str(runtime_parent), "TMPDIR": str(runtime_parent)}
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = NodeProcess(tmp_path / "first", receiver.url, env=env).start()
    worker_pid = first.worker_pid()
    (left_behind,) = runtime_parent.glob("gpusrv-*")
    first.signal(signal.SIGKILL)
    first.wait_exit(30)
    assert wait_gone(worker_pid, 30)  # the worker follows its supervisor
    assert left_behind.is_dir()
    # Beside it: a live process's folder, and a link: neither is touched.
    live = runtime_parent / f"gpusrv-{os.getpid()}-live"
    live.mkdir(mode=0o700)
    link = runtime_parent / "gpusrv-a-link"
    link.symlink_to(live)

    second = NodeProcess(tmp_path / "second", receiver.url, env=env).start()
    try:
        assert not left_behind.exists()
        removed = second.events("runtime_dir_removed")
        assert [e["dir"] for e in removed] == [str(left_behind)]
        assert live.is_dir() and link.is_symlink()
        (own,) = [p for p in runtime_parent.glob(f"gpusrv-{second.pid}-*")]
        assert mode(own) == 0o700
    finally:
        assert second.stop() == 0, second.tail()
    assert not own.exists()  # a clean stop removes its own


async def test_credentials_inside_the_callback_url_never_reach_the_logs(tmp_path, receiver, http):
    url = receiver.url.replace("http://", "http://asset-user:pass-w0rd-secret@") + "?access_token=tok-3f9c-secret&v=2"
    node = NodeProcess(tmp_path, url, {"callback": {"max_retries": 0}}).start()
    try:
        status, _, body = await submit(http, node.base_url, tryon_form("redacted-url", config={"steps": 1}))
        assert status == 202, body
        await receiver.await_callback("redacted-url")
        attempt = node.wait_event("callback_attempt", job_id="redacted-url")
        node.wait_event("callback_succeeded", job_id="redacted-url")
    finally:
        assert node.stop() == 0, node.tail()
    host = receiver.url.removeprefix("http://")
    assert attempt["url"] == f"http://***@{host}?access_token=***&v=***"
    logs = node.stdout_path.read_text() + node.stderr_path.read_text()
    for secret in ("pass-w0rd-secret", "tok-3f9c-secret", "asset-user"):
        assert secret not in logs
