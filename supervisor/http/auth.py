"""Shared-secret checks. Constant-time, and every token is compared every time, so the
answer's timing tells nothing about which token (or how much of one) matched."""

from __future__ import annotations

import hmac
from typing import Iterable


class TokenSet:
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
