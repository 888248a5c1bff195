"""The spool: finished results on local disk until the Asset Service has them.

One file per result, holding the callback exactly as it is sent (the multipart body and its
content type) and a small header: the `webhook-id` (so a node restarted on the same spool
sends the same id), and what `GET /jobs` tells about the job. Never the job's inputs.

Layout of `spool.dir`:
    <job_id>~<webhook_id>.cb   waiting for delivery (the node retries these)
    tmp/                       files being written; leftovers of a crash are removed at start
    dead/                      undeliverable (a final 4xx): kept for the operator, never retried
    quarantine/                files that could not be read back (corrupt, truncated, foreign)

A file is `MAGIC | header length (4 bytes, big endian) | header (JSON) | body | SHA-256 of
header and body`. It is written to tmp/, fsynced, renamed into place and the folder fsynced,
so it is either complete or absent; the checksum catches what the disk or a hand did later.
The methods do blocking file I/O: the event loop calls the slow ones through a thread.

A running node also picks up waiting files it did not write (dead letters moved back by
`gpu-server spool replay`): `scan` lists them (in a thread), `adopt` takes them in (on the
event loop), which the node does every `spool.rescan_s` and at once on SIGHUP. The counts for the
metrics (`waiting_on_disk`, `dead_on_disk`) are read from the folders, as `spool list`
reads them, so the two always agree.
"""

from __future__ import annotations

import collections
import hashlib
import os
import struct
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple

import msgspec

from ipc.jsonlog import EventLog

MAGIC = b"gpu-server-spool-1\n"
SUFFIX = ".cb"
DIGEST_BYTES = 32
_LENGTH = struct.Struct(">I")
# The start-up probe writes this much: a spool that cannot hold one typical result
# (a 1024x1024 PNG is about 1 MiB) is refused at start rather than failing every job.
PROBE_BYTES = 1024 * 1024
# Results hold user ids and pictures: only the node's own user may read them.
FOLDER_MODE = 0o700
FILE_MODE = 0o600
events = EventLog("supervisor.spool")


class SpoolRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """The header of one spooled result."""

    job_id: str
    webhook_id: str
    content_type: str  # of the multipart body
    spooled_at: float  # Unix seconds; the age limit counts from here
    state: str
    created_at: float  # Unix seconds of the job's 202
    timings_ms: dict[str, int | None]
    error_code: str | None = None
    error_message: str | None = None
    started_at: float | None = None  # Unix seconds its (last) run began on a worker


class SpoolCorrupt(Exception):
    """A spool file that cannot be read back as written."""


class SpoolUnusable(Exception):
    """The spool folder cannot be created or written (permissions, disk full, not a folder)."""


class Loaded(NamedTuple):
    name: str
    record: SpoolRecord


class Found(NamedTuple):
    """A waiting file the node did not know of, with its header or why it is unreadable."""

    name: str
    record: SpoolRecord | None
    problem: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpoolRecord)


def encode(record: SpoolRecord, body: bytes) -> list[bytes]:
    """The parts of a spool file, in order (written one by one: no copy of the body)."""
    header = _encoder.encode(record)
    return [MAGIC, _LENGTH.pack(len(header)), header, body, _digest(header, body)]


def _digest(header: bytes, body: bytes) -> bytes:
    h = hashlib.sha256(header)
    h.update(body)
    return h.digest()


def decode(data: bytes) -> tuple[SpoolRecord, bytes]:
    """The header and body of a spool file; SpoolCorrupt for anything else."""
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start + DIGEST_BYTES or not data.startswith(MAGIC):
        raise SpoolCorrupt("not a spool file (bad magic or too short)")
    (header_len,) = _LENGTH.unpack_from(data, len(MAGIC))
    if start + header_len + DIGEST_BYTES > len(data):
        raise SpoolCorrupt("truncated")
    header = data[start : start + header_len]
    body = data[start + header_len : -DIGEST_BYTES]
    if _digest(header, body) != data[-DIGEST_BYTES:]:
        raise SpoolCorrupt("checksum mismatch")
    try:
        return _decoder.decode(header), body
    except msgspec.DecodeError as exc:
        raise SpoolCorrupt(f"unreadable header: {exc}") from None


def read_header(path: Path) -> SpoolRecord:
    """The header of a spool file without reading its body (a start with a large backlog
    reads kilobytes, not gigabytes); the checksum is verified when the body is read."""
    start = len(MAGIC) + _LENGTH.size
    with open(path, "rb") as f:
        prefix = f.read(start)
        if len(prefix) < start or not prefix.startswith(MAGIC):
            raise SpoolCorrupt("not a spool file (bad magic or too short)")
        (header_len,) = _LENGTH.unpack_from(prefix, len(MAGIC))
        if start + header_len + DIGEST_BYTES > os.fstat(f.fileno()).st_size:
            raise SpoolCorrupt("truncated")
        header = f.read(header_len)
    try:
        return _decoder.decode(header)
    except msgspec.DecodeError as exc:
        raise SpoolCorrupt(f"unreadable header: {exc}") from None


def file_name(record: SpoolRecord) -> str:
    # `~` is outside the id alphabet, so the name is unambiguous; it is for people only:
    # the header is what the node trusts.
    return f"{record.job_id}~{record.webhook_id}{SUFFIX}"


class Spool:
    def __init__(self, root: Path, on_quarantine: Callable[[], None] = lambda: None) -> None:
        self.root = root
        self.on_quarantine = on_quarantine
        self.tmp = root / "tmp"
        self.dead = root / "dead"
        self.quarantine_dir = root / "quarantine"
        self._records: dict[str, SpoolRecord] = {}  # file name -> header, the pending entries
        self._job_ids: collections.Counter[str] = collections.Counter()
        # Files being written by this process (write_file until add): not for a rescan to take.
        self._writing: set[str] = set()

    # --- start ---------------------------------------------------------------------

    def open(self) -> list[Loaded]:
        """Create the folders, prove the disk takes a write, and list what waits for
        delivery (`*.cb` files; quarantining those whose header cannot be read).
        SpoolUnusable when the folder cannot be used."""
        try:
            for folder in (self.root, self.tmp, self.dead, self.quarantine_dir):
                folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
                _restrict(folder)
            self._probe()
        except OSError as exc:
            raise SpoolUnusable(f"{self.root}: {exc.strerror or exc}") from exc
        for leftover in self.tmp.iterdir():
            # A write the node did not finish: its job's result was never acknowledged as spooled.
            events.warning("spool_tmp_removed", file=leftover.name)
            _unlink(leftover)
        loaded = []
        for path in sorted(self.root.glob(f"*{SUFFIX}")):
            if not path.is_file():
                continue
            try:
                record = read_header(path)
            except (SpoolCorrupt, OSError) as exc:
                self.quarantine(path.name, str(exc))
                continue
            self._index(path.name, record)
            loaded.append(Loaded(path.name, record))
        return loaded

    def _probe(self) -> None:
        probe = self.tmp / ".probe"
        try:
            with _create(probe) as f:
                f.write(b"\0" * PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.tmp)
        finally:
            _unlink(probe)

    # --- what the node asks --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def holds(self, job_id: str) -> bool:
        return self._job_ids[job_id] > 0

    def records(self) -> Iterator[Loaded]:
        return (Loaded(name, record) for name, record in self._records.items())

    def waiting_on_disk(self) -> int:
        """Files waiting for delivery, counted as `gpu-server spool list` shows them
        (blocking: for the scrape's thread)."""
        return _count_files(self.root.glob(f"*{SUFFIX}"))

    def dead_on_disk(self) -> int:
        """Dead letters, counted as `gpu-server spool list` shows them (blocking)."""
        return _count_files(self.dead.glob(f"*{SUFFIX}*"))

    # --- a running node's rescan ---------------------------------------------------

    def known(self) -> frozenset[str]:
        """The names this process holds or is writing (read on the event loop, for scan)."""
        return frozenset(self._records) | frozenset(self._writing)

    def scan(self, known: frozenset[str]) -> list[Found]:
        """The waiting files not in `known`, with their headers. Blocking: for a thread."""
        found = []
        for path in sorted(self.root.glob(f"*{SUFFIX}")):
            if path.name in known or not path.is_file():
                continue
            try:
                found.append(Found(path.name, read_header(path)))
            except FileNotFoundError:
                continue  # delivered and removed meanwhile
            except (SpoolCorrupt, OSError) as exc:
                found.append(Found(path.name, None, str(exc)))
        return found

    def adopt(self, found: list[Found]) -> list[Loaded]:
        """Take in what scan found, as the start does (an unreadable file is quarantined).
        On the event loop: a name written or delivered since the scan is left alone."""
        adopted = []
        for name, record, problem in found:
            if name in self._records or name in self._writing or not (self.root / name).is_file():
                continue
            if record is None:
                self.quarantine(name, problem or "unreadable")
                continue
            self._index(name, record)
            adopted.append(Loaded(name, record))
        return adopted

    # --- changes -------------------------------------------------------------------

    def write_file(self, record: SpoolRecord, body: bytes) -> str:
        """Store a result durably; its file name. Raises OSError (disk full, ...). Slow and
        blocking (for a thread): the file only, not the index, which only the event loop's
        thread touches (add() next)."""
        name = file_name(record)
        tmp = self.tmp / name
        self._writing.add(name)  # before the rename: a rescan must not take it as someone else's
        try:
            with _create(tmp) as f:
                f.writelines(encode(record, body))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / name)
        except BaseException:
            _unlink(tmp)
            self._writing.discard(name)
            raise
        _fsync_dir(self.root)
        return name

    def add(self, name: str, record: SpoolRecord) -> None:
        """Count a file written by write_file() as pending."""
        self._index(name, record)
        self._writing.discard(name)

    def read(self, name: str) -> bytes:
        """The body of a pending entry. FileNotFoundError if it went away, SpoolCorrupt."""
        _, body = decode((self.root / name).read_bytes())
        return body

    # remove/dead_letter/quarantine settle an entry for this process even when the disk
    # refuses the change (read-only, permissions): the entry leaves the index either way,
    # so a delivered result is never attempted again here. The file left behind is logged;
    # at the next start it is sent once more, which at-least-once delivery allows.

    def remove(self, name: str) -> None:
        """Delivered or expired. (No folder fsync: should the removal be lost in a crash,
        the result is sent once more, which at-least-once delivery allows.)"""
        try:
            _unlink(self.root / name)
        except OSError as exc:
            events.error("spool_remove_failed", file=name, error=str(exc))
        self._forget(name)

    def dead_letter(self, name: str) -> None:
        """Undeliverable: out of the delivery path, kept for the operator."""
        self._move(name, self.dead)
        self._forget(name)

    def quarantine(self, name: str, why: str) -> None:
        events.error("spool_entry_quarantined", file=name, reason=why, moved_to=str(self.quarantine_dir))
        self._move(name, self.quarantine_dir)
        self._forget(name)
        self.on_quarantine()

    def _move(self, name: str, folder: Path) -> None:
        target = folder / name
        if target.exists():  # the same name dead-lettered before: keep both
            target = folder / f"{name}.{time.time_ns()}"
        try:
            os.replace(self.root / name, target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            events.error("spool_move_failed", file=name, to=str(folder), error=str(exc))

    def _index(self, name: str, record: SpoolRecord) -> None:
        if name not in self._records:
            self._job_ids[record.job_id] += 1
        self._records[name] = record

    def _forget(self, name: str) -> None:
        record = self._records.pop(name, None)
        if record is not None:
            self._job_ids[record.job_id] -= 1
            if self._job_ids[record.job_id] <= 0:
                del self._job_ids[record.job_id]


def _count_files(paths: Iterator[Path]) -> int:
    count = 0
    for path in paths:
        try:
            count += path.is_file()
        except OSError:
            continue
    return count


def _restrict(folder: Path) -> None:
    """0700, also for a folder made 0755 by an older version (mkdir's mode only applies
    to new ones). A folder this user may not chmod (not its owner) is used as it is."""
    try:
        if folder.stat().st_mode & 0o777 != FOLDER_MODE:
            os.chmod(folder, FOLDER_MODE)
    except PermissionError as exc:
        events.warning("spool_folder_mode_kept", dir=str(folder), error=str(exc), wanted=oct(FOLDER_MODE))


def _create(path: Path) -> BinaryIO:
    """A new file open for writing, readable by this user only (whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its old mode through O_CREAT
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
