"""The walk that finds every problem of a config at once, and the lines of its keys."""

from __future__ import annotations

import textwrap
from typing import Annotated, Union

import msgspec
import pytest
from msgspec import Meta

from supervisor.config import check as cc


class Inner(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    port: Annotated[int, Meta(ge=1, le=65535)] = 8080
    host: str = "127.0.0.1"


class Target(msgspec.Struct, forbid_unknown_fields=True):
    node: str
    input: str


class Outer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, Meta(min_length=3)]
    tokens: list[Annotated[str, Meta(min_length=4)]] = []
    inner: Inner = msgspec.field(default_factory=Inner)
    target: Union[Target, None] = None


def test_every_problem_inside_one_struct_is_reported_not_only_the_first():
    problems = cc.check({"name": "x", "inner": {"port": 0, "hots": "h", "host": 5}}, Outer)
    assert {p.path for p in problems} == {"name", "inner.port", "inner.hots", "inner.host"}


def test_list_items_and_optional_structs_are_walked_into():
    problems = cc.check({"name": "abc", "tokens": ["long enough", "no"], "target": {"node": "1"}}, Outer)
    assert [(p.path, p.message) for p in problems] == [
        ("tokens[1]", "Expected `str` of length >= 4"),
        ("target.input", "required"),
    ]


def test_unknown_keys_get_the_closest_known_one_or_the_list():
    (problem,) = cc.check({"name": "abc", "innr": {}}, Outer)
    assert problem == cc.Problem("innr", "unknown key; did you mean 'inner'?")
    (problem,) = cc.check({"name": "abc", "zzz": 1}, Outer)
    assert problem.message == "unknown key; known keys: inner, name, target, tokens"


def test_skipped_keys_are_not_judged_again():
    assert cc.check({"name": "", "inner": {"port": ""}}, Outer, skip=["name", "inner.port"]) == []


def test_an_empty_section_means_its_defaults():
    assert cc.check({"name": "abc", "inner": None}, Outer) == []
    assert cc.empty_sections_dropped({"name": "abc", "inner": None}, Outer) == {"name": "abc"}


TEXT = textwrap.dedent(
    """\
    name: abc
    inner:
      port: 1
      host: h
    tokens:
      - aaaa
      - bbbb
    """
)


def test_lines_of_keys_and_list_items():
    lines = cc.key_lines(TEXT)
    assert lines == {"name": 1, "inner": 2, "inner.port": 3, "inner.host": 4, "tokens": 5, "tokens[0]": 6, "tokens[1]": 7}
    assert cc.line_of("inner.port", lines) == 3
    assert cc.line_of("inner.missing", lines) == 2  # the nearest enclosing key
    assert cc.line_of("absent", lines) is None


def test_problems_come_in_file_order_with_their_lines():
    lines = cc.key_lines(TEXT)
    located = cc.locate([cc.Problem("tokens[1]", "bad"), cc.Problem("name", "bad"), cc.Problem("other", "x")], lines)
    assert [str(p) for p in located] == ["other: x", "name: bad (line 1)", "tokens[1]: bad (line 7)"]


def test_the_partial_view_reads_valid_keys_and_defaults_and_refuses_broken_ones():
    view = cc.PartialView({"name": "abc", "inner": {"port": "9000", "host": 5}}, Outer, ["inner.host"])
    assert view.name == "abc" and view.inner.port == 9000 and view.tokens == []
    with pytest.raises(cc.Broken):
        view.inner.host
    assert cc.PartialView({}, Outer, []).inner.host == "127.0.0.1"
    with pytest.raises(cc.Broken):
        cc.PartialView({}, Outer, []).name  # required, not given
