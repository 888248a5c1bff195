"""examples/asset_service.py run alone, with the options its documentation names."""

from __future__ import annotations

import subprocess
import sys

import aiohttp

from tests.support.node import REPO


def test_help_lists_port_and_url_as_documented():
    result = subprocess.run([sys.executable, "examples/asset_service.py", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and "--port PORT" in result.stdout and "--url URL" in result.stdout
    doc = (REPO / "examples" / "asset_service.py").read_text().split('"""')[1]
    assert "--port 8090" in doc


async def test_started_with_port_it_takes_a_callback_and_saves_the_image(stand_in):
    form = aiohttp.FormData()
    form.add_field("job_id", "job-7")
    form.add_field("status", "succeeded")
    form.add_field("output_image", b"\x89PNG fake", filename="out.png", content_type="image/png")
    url = f"http://127.0.0.1:{stand_in.port}/callback"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url, data=form, headers={"X-Internal-Auth": "wrong"}) as refused:
            assert refused.status == 401
        async with session.post(url, data=form, headers={"X-Internal-Auth": "cb-token"}) as response:
            assert response.status == 200
            assert (await response.json())["job_id"] == "job-7"
    assert (stand_in.out / "job-7.png").read_bytes() == b"\x89PNG fake"
    stand_in.stdout.readline()  # the callback's fields
    assert stand_in.stdout.readline() == f"saved {(stand_in.out / 'job-7.png').resolve()}\n"


async def test_it_takes_job_events_on_events_and_prints_each(stand_in):
    event = {"type": "job.progress", "job_id": "job-8", "user_id": "u", "session_id": "s", "node_id": "n",
             "step": 3, "total": 8, "at": "2026-01-01T00:00:00.000Z"}
    url = f"http://127.0.0.1:{stand_in.port}/events"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url, json=event, headers={"X-Internal-Auth": "wrong"}) as refused:
            assert refused.status == 401
        async with session.post(url, json=event, headers={"X-Internal-Auth": "cb-token"}) as response:
            assert response.status == 200
    line = stand_in.stdout.readline()  # pytest-timeout bounds the wait
    assert line.strip() == "event: job.progress job-8 step 3/8 at 2026-01-01T00:00:00.000Z", line
