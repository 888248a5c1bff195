"""The callback's body: the contract's multipart form, built once per job, and the spool
header that goes with it."""

from __future__ import annotations

from typing import NamedTuple

import aiohttp

from supervisor.jobs.job import Job
from supervisor.delivery.spool import SpoolRecord

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class Body(NamedTuple):
    data: bytes
    content_type: str


async def build_body(job: Job, node_id: str) -> Body:
    """The callback form of the contract: always multipart, the image only on success."""
    result = job.result
    assert result is not None
    timings = job.timings_ms()
    # Multipart also without a file (aiohttp would fall back to urlencoded).
    form = aiohttp.FormData(default_to_multipart=True)
    fields = {
        "job_id": job.job_id,
        "user_id": job.user_id,
        "session_id": job.session_id,
        "provider": job.provider,
        "node_id": node_id,
        "model_version": job.model_version or "",
        "status": job.state.value,
        "inference_time_ms": str(timings["inference"] or 0),
        "queue_time_ms": str(timings["queue"] or 0),
        "total_time_ms": str(timings["total"] or 0),
        "prepare_time_ms": str(timings["prepare"] or 0),
        "finish_time_ms": str(timings["finish"] or 0),
    }
    if not result.ok:
        fields["error_code"] = result.error_code or ""
        fields["error_message"] = result.error_message or ""
    for name, value in fields.items():
        form.add_field(name, value)
    if result.ok and result.image is not None:
        content_type = result.content_type or "application/octet-stream"
        form.add_field(
            "output_image",
            result.image,
            filename=f"{job.job_id}.{EXTENSIONS.get(content_type, 'bin')}",
            content_type=content_type,
        )
    writer = form()
    return Body(await writer.as_bytes(), writer.content_type)


def spool_record(job: Job, body: Body, now: float) -> SpoolRecord:
    """The spool file's header: what GET /jobs tells about the job, and how to resend it."""
    result = job.result
    assert result is not None
    return SpoolRecord(
        job_id=job.job_id,
        webhook_id=job.webhook_id,
        content_type=body.content_type,
        spooled_at=now,
        state=job.state.value,
        created_at=job.accepted_at,
        started_at=job.started_at,
        timings_ms=job.timings_ms(),
        error_code=result.error_code,
        error_message=result.error_message,
    )
