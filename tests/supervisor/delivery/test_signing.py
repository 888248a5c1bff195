"""Standard Webhooks signatures, checked against the reference implementation."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from supervisor.delivery.signing import BadSecret, headers, parse_secret, signature

SECRET = "whsec_" + base64.b64encode(b"a key of thirty-two bytes, quite").decode()


def test_headers_verify_with_the_standardwebhooks_package_and_fail_when_altered():
    body = b'{"status": "succeeded"}'
    now = int(time.time())
    sent = headers(parse_secret(SECRET), "msg_123", now, body)
    assert sent["webhook-id"] == "msg_123" and sent["webhook-timestamp"] == str(now)
    Webhook(SECRET).verify(body, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"succeeded", b"failed"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, {**sent, "webhook-id": "msg_124"})


def test_binary_bodies_are_signed_over_their_exact_bytes():
    # The reference package decodes bodies as UTF-8, so it cannot check a body carrying a
    # PNG; the signature is the spec's HMAC over the raw bytes, which a receiver recomputes.
    body = b"--b\r\n\x89PNG\x00\xff\r\n--b--\r\n"
    key = parse_secret(SECRET)
    expected = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(1700000000, tz=timezone.utc), "x")
    assert signature(key, "msg_1", 1700000000, b"x") == expected
    assert signature(key, "msg_1", 1700000000, body) != signature(key, "msg_1", 1700000000, body + b" ")


def test_without_a_secret_only_the_webhook_id_is_sent():
    assert headers(None, "msg_1", 1, b"body") == {"webhook-id": "msg_1"}


@pytest.mark.parametrize("secret", ["abc", "whsec_", "whsec_not base64!", "WHSEC_YWJj"])
def test_bad_secrets_are_refused(secret):
    with pytest.raises(BadSecret):
        parse_secret(secret)
