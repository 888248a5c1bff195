"""One callback attempt: what an answer means, and a failure that is never an exception."""

from __future__ import annotations

import aiohttp
import pytest

from supervisor import __version__
from supervisor.delivery.callback_http import USER_AGENT, Attempt, post
from tests.support.receiver import Reply


@pytest.mark.parametrize(
    "status, delivered, final",
    [(200, True, False), (204, True, False), (400, False, True), (410, False, True), (408, False, False),
     (429, False, False), (503, False, False), (None, False, False)],
)
def test_what_an_answer_means(status, delivered, final):
    attempt = Attempt(status, None, "x")
    assert (attempt.delivered, attempt.final) == (delivered, final)


async def test_an_attempt_says_who_calls_and_reads_retry_after(receiver):
    receiver.answer_for["http-1"] = lambda: Reply(429, {"Retry-After": "7"})
    body = b"--b\r\nContent-Disposition: form-data; name=\"job_id\"\r\n\r\nhttp-1\r\n--b--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    async with aiohttp.ClientSession() as session:
        outcome = await post(session, receiver.url, body, headers, 5, "http-1")
    assert outcome == Attempt(429, 7.0, "HTTP 429")
    (call,) = receiver.for_job("http-1")
    assert call.headers["User-Agent"] == USER_AGENT == f"gpu-server/{__version__}"


async def test_no_answer_is_a_failed_attempt_not_an_exception():
    async with aiohttp.ClientSession() as session:
        outcome = await post(session, "http://127.0.0.1:9/cb", b"x", {}, 2, "nobody")
    assert outcome.status is None and not outcome.delivered and not outcome.final
