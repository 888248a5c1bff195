"""The spool on a real folder: atomic entries read back as written, corrupt ones set aside."""

from __future__ import annotations

import os

import pytest

from supervisor.delivery.spool import MAGIC, Spool, SpoolCorrupt, SpoolRecord, SpoolUnusable, decode, encode, file_name


def record(job_id: str = "job-1", webhook_id: str = "msg_1") -> SpoolRecord:
    return SpoolRecord(
        job_id=job_id, webhook_id=webhook_id, content_type="multipart/form-data; boundary=x",
        spooled_at=1000.0, state="succeeded", created_at=990.0,
        timings_ms={"queue": 1, "inference": 2, "total": 3},
    )


def put(spool: Spool, entry: SpoolRecord, body: bytes) -> str:
    """Store a result the way the node does: the file (in a thread there), then the index."""
    name = spool.write_file(entry, body)
    spool.add(name, entry)
    return name


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool")
    assert s.open() == []
    return s


def test_an_entry_reads_back_byte_for_byte_and_is_known(spool):
    body = bytes(range(256)) * 100
    name = put(spool, record(), body)
    assert name == "job-1~msg_1.cb" and (spool.root / name).is_file()
    assert spool.read(name) == body
    assert spool.holds("job-1") and not spool.holds("job-2") and len(spool) == 1
    assert list(os.scandir(spool.tmp)) == []  # nothing left half-written


def test_a_new_spool_object_on_the_same_folder_finds_the_entries(spool):
    put(spool, record("a", "msg_a"), b"body-a")
    put(spool, record("b", "msg_b"), b"body-b")
    again = Spool(spool.root)
    loaded = again.open()
    assert sorted((item.name, item.record.job_id) for item in loaded) == [("a~msg_a.cb", "a"), ("b~msg_b.cb", "b")]
    assert again.holds("a") and again.read("b~msg_b.cb") == b"body-b"


def test_remove_and_dead_letter_take_the_job_out_of_the_pending_set(spool):
    delivered = put(spool, record("a", "msg_a"), b"x")
    rejected = put(spool, record("b", "msg_b"), b"y")
    spool.remove(delivered)
    spool.dead_letter(rejected)
    assert len(spool) == 0 and not spool.holds("a") and not spool.holds("b")
    assert [p.name for p in spool.dead.iterdir()] == ["b~msg_b.cb"]
    assert Spool(spool.root).open() == []  # dead letters are never picked up again


def test_a_failing_unlink_still_settles_the_entry(spool, monkeypatch):
    delivered = put(spool, record("a", "msg_a"), b"x")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(type(spool.root), "unlink", refuse)
    spool.remove(delivered)
    # Settled for this process (never attempted again); the file waits for the next start.
    assert len(spool) == 0 and not spool.holds("a")
    monkeypatch.undo()
    assert (spool.root / delivered).exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(MAGIC) + 10],  # truncated inside the header
        lambda data: data[:30] + b"{" + data[31:],  # a broken header
        lambda data: b"something else entirely",  # not a spool file
        lambda data: b"",  # empty
    ],
)
def test_damaged_entries_are_quarantined_at_start_never_fatal(spool, damage):
    name = put(spool, record(), b"the body" * 50)
    path = spool.root / name
    path.write_bytes(damage(path.read_bytes()))
    quarantined = []
    again = Spool(spool.root, on_quarantine=lambda: quarantined.append(1))
    assert again.open() == []
    assert [p.name for p in again.quarantine_dir.iterdir()] == [name]
    assert quarantined == [1] and not again.holds("job-1")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-40] + bytes([data[-40] ^ 1]) + data[-39:],  # a flipped bit in the body
        lambda data: data[: len(data) - 100],  # truncated inside the body
    ],
)
def test_a_damaged_body_is_found_when_read_and_can_be_quarantined(spool, damage):
    name = put(spool, record(), b"the body" * 50)
    path = spool.root / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SpoolCorrupt, match="checksum"):
        spool.read(name)
    spool.quarantine(name, "checksum mismatch")
    assert not spool.holds("job-1") and (spool.quarantine_dir / name).is_file()


def test_files_that_are_not_entries_are_left_alone(spool):
    (spool.root / "NOTES.txt").write_text("the operator's")
    assert Spool(spool.root).open() == []
    assert (spool.root / "NOTES.txt").is_file() and list(spool.quarantine_dir.iterdir()) == []


def test_leftovers_of_an_interrupted_write_are_removed_at_start(spool):
    (spool.tmp / "job-9~msg_9.cb").write_bytes(b"half")
    assert Spool(spool.root).open() == []
    assert list(spool.tmp.iterdir()) == []


def test_decode_refuses_what_encode_did_not_make():
    good = b"".join(encode(record(), b"body"))
    assert decode(good) == (record(), b"body")
    with pytest.raises(SpoolCorrupt):
        decode(MAGIC + b"\xff\xff\xff\xff" + b"\0" * 40)  # a header length past the end


def test_a_folder_that_cannot_be_created_is_unusable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolUnusable, match="file"):
        Spool(blocker / "spool").open()


def test_file_names_keep_job_and_webhook_id_apart():
    assert file_name(record("a.b:c-d_e", "msg_f")) == "a.b:c-d_e~msg_f.cb"


def test_entries_are_0600_in_0700_folders_whatever_the_umask(tmp_path):
    old_umask = os.umask(0o022)
    try:
        (tmp_path / "spool").mkdir(mode=0o755)  # as an older version made it
        spool = Spool(tmp_path / "spool")
        spool.open()
        name = put(spool, record(), b"body")
        spool.dead_letter(put(spool, record("job-2", "msg_2"), b"body"))
    finally:
        os.umask(old_umask)
    for folder in (spool.root, spool.tmp, spool.dead, spool.quarantine_dir):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    for path in (spool.root / name, spool.dead / "job-2~msg_2.cb"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def write_elsewhere(spool: Spool, entry: SpoolRecord, body: bytes) -> str:
    """A waiting file this process did not write: what `gpu-server spool replay` leaves."""
    return Spool(spool.root).write_file(entry, body)


def test_a_rescan_finds_only_the_files_this_process_does_not_hold(spool):
    put(spool, record("mine"), b"m")
    theirs = write_elsewhere(spool, record("replayed", "msg_r"), b"r")
    found = spool.scan(spool.known())
    assert [f.name for f in found] == [theirs] and found[0].record.job_id == "replayed"
    assert [loaded.name for loaded in spool.adopt(found)] == [theirs]
    assert spool.holds("replayed") and len(spool) == 2
    assert spool.scan(spool.known()) == [] and spool.adopt(found) == []  # taken once


def test_a_rescan_leaves_a_file_being_written_and_one_gone_since(spool):
    name = spool.write_file(record("writing"), b"w")  # renamed into place, not yet add()ed
    assert spool.scan(spool.known()) == []
    spool.add(name, record("writing"))
    gone = write_elsewhere(spool, record("gone", "msg_g"), b"g")
    found = spool.scan(spool.known())
    (spool.root / gone).unlink()  # delivered by hand, or given up, before adopt
    assert spool.adopt(found) == [] and not spool.holds("gone")


def test_a_rescan_quarantines_an_unreadable_file_as_the_start_does(spool):
    (spool.root / "junk~x.cb").write_bytes(b"not a spool file")
    found = spool.scan(spool.known())
    assert found[0].record is None and spool.adopt(found) == []
    assert [p.name for p in spool.quarantine_dir.iterdir()] == ["junk~x.cb"]


def test_the_counts_for_the_metrics_are_those_spool_list_shows(spool):
    from supervisor.delivery.spool_admin import list_entries

    put(spool, record("a"), b"a")
    write_elsewhere(spool, record("b", "msg_b"), b"b")
    put(spool, record("c", "msg_c"), b"c")
    spool.dead_letter("c~msg_c.cb")
    folders = [row.folder for row in list_entries(spool)]
    assert (spool.waiting_on_disk(), spool.dead_on_disk()) == (folders.count("waiting"), folders.count("dead")) == (2, 1)
