"""The smallest valid config file, and the problems a config text has, for the config's tests."""

from __future__ import annotations

import textwrap

import pytest

from supervisor import config as cfg

MINIMAL = """
node_id: node-1
auth: {tokens: ["0123456789abcdef"]}
callback: {url: "http://127.0.0.1:9/cb", token: t}
"""


def problems_of(text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.parse(textwrap.dedent(text), env or {})
    return caught.value.problems
