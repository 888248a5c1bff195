"""Submitting try-on jobs over real HTTP (aiohttp) in integration tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.support import images
from tests.support.node import TOKEN

_PERSON = images.person()
_GARMENT = images.garment()


def long_job_form(job_id: str) -> aiohttp.FormData:
    """A job the reference backend works on for a few seconds."""
    return tryon_form(job_id, person_image=images.LONG_JOB_PERSON, config=images.LONG_JOB_CONFIG)


async def start_long_job(session: aiohttp.ClientSession, node, job_id: str) -> None:
    """Submit a long job and return once the worker has started on it."""
    status, _, body = await submit(session, node.base_url, long_job_form(job_id))
    assert status == 202, body
    await asyncio.to_thread(node.wait_event, "inference_started", job_id=job_id)


def tryon_form(job_id: str, *, config: Any = None, omit: tuple[str, ...] = (), **overrides: Any) -> aiohttp.FormData:
    """A valid form unless told otherwise: override a field with a value, or omit it."""
    fields: dict[str, Any] = {
        "job_id": job_id,
        "user_id": "user-1",
        "session_id": "session-1",
        "provider": "qwen",
        "person_image": _PERSON,
        "garment_image": _GARMENT,
    }
    if config is not None:
        fields["config"] = config if isinstance(config, (str, bytes)) else json.dumps(config)
    fields.update(overrides)
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        if name in omit:
            continue
        if name.endswith("_image") and isinstance(value, bytes):
            form.add_field(name, value, filename=f"{name}.bin", content_type="application/octet-stream")
        elif isinstance(value, bytes):  # raw bytes (say, not UTF-8): a part with a filename, as aiohttp makes it
            form.add_field(name, value, filename=name)
        else:
            form.add_field(name, value)
    return form


async def submit(
    session: aiohttp.ClientSession,
    base_url: str,
    form: aiohttp.FormData | bytes,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict, Any]:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["X-Internal-Auth"] = token
    async with session.post(f"{base_url}/tryon", data=form, headers=all_headers) as response:
        text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return response.status, dict(response.headers), body
