"""`gpu-server spool list|replay` on a real spool folder."""

from __future__ import annotations

from supervisor import cli
from supervisor.delivery.spool import Spool
from supervisor.delivery.spool_admin import list_entries, replay_dead
from tests.supervisor.delivery.test_spool import put, record


def spool_with_entries(tmp_path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.open()
    put(spool, record("waits", "msg_w"), b"w")
    spool.dead_letter(put(spool, record("rejected-1", "msg_r1"), b"r1"))
    spool.dead_letter(put(spool, record("rejected-2", "msg_r2"), b"r2"))
    (spool.quarantine_dir / "junk~x.cb").write_bytes(b"junk")
    return spool


def test_list_shows_every_folder(tmp_path):
    rows = list_entries(spool_with_entries(tmp_path), now=1060.0)
    assert [(r.folder, r.job_id) for r in rows] == [
        ("waiting", "waits"), ("dead", "rejected-1"), ("dead", "rejected-2"), ("quarantine", "?"),
    ]
    assert rows[0].age_s == 60 and rows[0].webhook_id == "msg_w"
    assert rows[3].state.startswith("unreadable")


def test_replay_moves_chosen_dead_letters_back_and_the_next_start_finds_them(tmp_path):
    spool = spool_with_entries(tmp_path)
    moved, skipped = replay_dead(spool, ["rejected-2"], now=5000.0)
    assert moved == ["rejected-2~msg_r2.cb"] and skipped == []
    loaded = {item.record.job_id: item.record for item in Spool(spool.root).open()}
    assert sorted(loaded) == ["rejected-2", "waits"]
    # Its age limit counts from the replay; the same bytes and webhook-id go out.
    assert loaded["rejected-2"].spooled_at == 5000.0 and loaded["waits"].spooled_at == 1000.0
    assert Spool(spool.root).read("rejected-2~msg_r2.cb") == b"r2"
    moved, _ = replay_dead(spool)
    assert moved == ["rejected-1~msg_r1.cb"] and list(spool.dead.iterdir()) == []


def test_the_console_command(tmp_path, capsys):
    spool = spool_with_entries(tmp_path / "conf")
    config = tmp_path / "conf" / "config.yaml"
    config.write_text('node_id: n\nauth: {tokens: ["0123456789abcdef"]}\ncallback: {url: "http://127.0.0.1:9/c", token: t}\n')
    assert cli.main(["spool", "--config", str(config), "list"]) == 0
    out = capsys.readouterr().out
    assert "rejected-1" in out and "waiting\twaits" in out
    assert cli.main(["spool", "--config", str(config), "replay"]) == 0
    assert "2 dead letter(s) moved back" in capsys.readouterr().out
    assert len(Spool(spool.root).open()) == 3
