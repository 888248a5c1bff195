"""`gpu-server spool list|replay`: what an operator does with the spool, without the node.

`list` shows every entry (waiting, dead letters, quarantined) from its header; `replay`
moves dead letters back among the waiting ones, which a running node on that spool picks
up within `spool.rescan_s` (at once on SIGHUP) and a stopped one at its next start, with
their original `webhook-id`. A replayed entry's age limit (`spool.max_age_s`) counts
from the replay: dead letters wait for the operator however long, and one older than the
limit would otherwise be expired at the next start instead of sent. A job id that has no
dead letter, or one that could not be moved, is named on stderr and the exit code is 1.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterable, NamedTuple

import msgspec

from supervisor.delivery.spool import FOLDER_MODE, SUFFIX, Spool, SpoolCorrupt, decode, file_name, read_header


class Row(NamedTuple):
    folder: str  # waiting, dead, quarantine
    file: str
    job_id: str
    webhook_id: str
    state: str
    error_code: str
    age_s: int | None
    bytes: int


def list_entries(spool: Spool, now: float | None = None) -> list[Row]:
    now = time.time() if now is None else now
    rows = []
    for folder, path in (
        [("waiting", p) for p in sorted(spool.root.glob(f"*{SUFFIX}"))]
        + [("dead", p) for p in sorted(spool.dead.glob(f"*{SUFFIX}*"))]
        + [("quarantine", p) for p in sorted(spool.quarantine_dir.glob("*"))]
    ):
        if not path.is_file():
            continue
        size = path.stat().st_size
        try:
            r = read_header(path)
        except (SpoolCorrupt, OSError) as exc:
            rows.append(Row(folder, path.name, "?", "?", f"unreadable: {exc}", "", None, size))
            continue
        rows.append(
            Row(folder, path.name, r.job_id, r.webhook_id, r.state, r.error_code or "", round(now - r.spooled_at), size)
        )
    return rows


def replay_dead(spool: Spool, job_ids: Iterable[str] = (), now: float | None = None) -> tuple[list[str], list[str]]:
    """Move dead letters (all, or those of `job_ids`) back to the waiting entries, as if
    spooled `now`: (moved file names, skipped with why)."""
    now = time.time() if now is None else now
    wanted = set(job_ids)
    moved, skipped = [], []
    found: set[str] = set()  # the wanted jobs that had a dead letter
    for path in sorted(spool.dead.glob(f"*{SUFFIX}*")):
        try:
            record = read_header(path)
        except (SpoolCorrupt, OSError) as exc:
            skipped.append(f"{path.name}: unreadable ({exc})")
            continue
        if wanted and record.job_id not in wanted:
            continue
        target = spool.root / file_name(record)
        if target.parent != spool.root or "/" in record.job_id + record.webhook_id:
            skipped.append(f"{path.name}: ids that do not make a file name")  # a hand-made header
            continue
        if target.exists():
            skipped.append(f"{path.name}: {target.name} already waits")
            found.add(record.job_id)
            continue
        try:
            _requeue(spool, path, now)
        except (SpoolCorrupt, OSError) as exc:
            skipped.append(f"{path.name}: not moved ({exc})")
            continue
        moved.append(target.name)
        found.add(record.job_id)
    for job_id in sorted(wanted - found):
        waiting = any(path.name.startswith(f"{job_id}~") for path in spool.root.glob(f"*{SUFFIX}"))
        why = "its result waits for delivery already, it is not a dead letter" if waiting else "no dead letter of this job"
        skipped.append(f"{job_id}: {why}")
    return moved, skipped


def _requeue(spool: Spool, dead: Path, now: float) -> None:
    """Write the dead letter's body back among the waiting entries with its header's
    `spooled_at` set to `now` (the same bytes and `webhook-id`), then remove the letter. Run
    as root, the new file gets the letter's owner, so the node can still read it."""
    record, body = decode(dead.read_bytes())
    owner = dead.stat()
    spool.tmp.mkdir(mode=FOLDER_MODE, exist_ok=True)
    written = spool.root / spool.write_file(msgspec.structs.replace(record, spooled_at=now), body)
    try:
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.chown(written, owner.st_uid, owner.st_gid)
    except OSError:
        written.unlink(missing_ok=True)  # the letter stays where it was, and only there
        raise
    dead.unlink()


def format_rows(rows: list[Row]) -> str:
    lines = ["folder\tjob_id\tstate\terror_code\tage_s\tbytes\twebhook_id\tfile"]
    for r in rows:
        age = "" if r.age_s is None else str(r.age_s)
        lines.append(f"{r.folder}\t{r.job_id}\t{r.state}\t{r.error_code}\t{age}\t{r.bytes}\t{r.webhook_id}\t{r.file}")
    return "\n".join(lines)


def main(spool_dir: Path, action: str, job_ids: list[str], rescan_s: float = 10.0) -> int:
    spool = Spool(spool_dir)
    if not spool.root.is_dir():
        print(f"gpu-server: no spool folder at {spool.root}", file=sys.stderr)
        return 1
    if action == "list":
        print(format_rows(list_entries(spool)))
        return 0
    moved, skipped = replay_dead(spool, job_ids)
    for name in moved:
        print(f"replay: {name}")
    print(
        f"{len(moved)} dead letter(s) moved back to {spool.root}; a running node sends them within "
        f"{rescan_s:g} s (spool.rescan_s; at once on SIGHUP), a stopped one at its next start."
    )
    for why in skipped:
        print(f"gpu-server: not replayed: {why}", file=sys.stderr)
    # Not everything asked for was done: a script must not take it for a success.
    return 1 if skipped else 0
