from __future__ import annotations

from supervisor.http.auth import TokenSet, bearer_token


def test_any_configured_token_is_accepted_and_nothing_else():
    tokens = TokenSet(["a" * 16, "b" * 16])
    assert tokens.accepts("a" * 16) and tokens.accepts("b" * 16)
    for wrong in (None, "", "a" * 15, "a" * 17, "A" * 16, "é" * 16, "\udcff"):
        assert not tokens.accepts(wrong)


def test_an_empty_set_accepts_nothing():
    assert not TokenSet([]).accepts("anything")


def test_bearer_token():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for value in (None, "", "Basic abc", "Bearer", "Bearer "):
        assert bearer_token(value) is None
