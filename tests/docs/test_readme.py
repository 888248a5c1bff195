"""The README tells one story: facts it states in several places agree."""

from __future__ import annotations

import re

from tests.support.node import REPO

README = (REPO / "README.md").read_text()


def test_one_duration_for_the_test_suite():
    durations = set(re.findall(r"about (\w+) minutes? on 2 cores", README))
    assert len(durations) == 1, durations


def test_the_deploying_section_covers_the_three_paths():
    section = README.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    for heading in ("### Container image", "### Kubernetes", "### systemd", "### Rolling updates", "### TLS and network placement"):
        assert heading in section, heading
