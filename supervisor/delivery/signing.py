"""Standard Webhooks signatures for callbacks (https://www.standardwebhooks.com/).

`webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, keyed with the
base64-decoded part of the secret after `whsec_`. Every attempt is signed anew, with the
Unix time of that attempt, over exactly the bytes it sends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


class BadSecret(ValueError):
    pass


def parse_secret(secret: str) -> bytes:
    """The HMAC key inside `whsec_<base64>`; BadSecret says what is wrong with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecret(f"must start with {SECRET_PREFIX}")
    encoded = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret(f"the part after {SECRET_PREFIX} must be valid base64") from None
    if not key:
        raise BadSecret(f"the part after {SECRET_PREFIX} is empty")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes | None, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt. `webhook-id` goes on every callback (the receiver's key
    for dropping duplicates); timestamp and signature only when a secret is configured."""
    out = {"webhook-id": msg_id}
    if key is not None:
        out["webhook-timestamp"] = str(timestamp)
        out["webhook-signature"] = signature(key, msg_id, timestamp, body)
    return out
