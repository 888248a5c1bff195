"""Jobs for the `Faulty` test backend: the prompt names how the worker misbehaves."""

from __future__ import annotations

import asyncio

from tests.support.client import submit, tryon_form

FAULTY = "tests.support.backends:Faulty"


def fault_form(job_id: str, fault: str | None):
    return tryon_form(job_id, config={"prompt": f"fault:{fault}"} if fault else None)


async def run_job(http, node, receiver, job_id: str, fault: str | None = None):
    """Submit once the node is ready; the job's callback."""
    await asyncio.to_thread(node.wait_ready)
    status, _, body = await submit(http, node.base_url, fault_form(job_id, fault))
    assert status == 202, body
    (callback,) = await receiver.await_callback(job_id)
    return callback
