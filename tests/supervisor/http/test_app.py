from __future__ import annotations

from types import SimpleNamespace

import pytest

from supervisor.http.app import route_label


@pytest.mark.parametrize(
    "path, label",
    [("tryon", "/tryon"), ("/gpu/status", "/gpu/status"), ("jobs/<job_id>", "/jobs/{job_id}"),
     ("jobs/<job_id:str>", "/jobs/{job_id}")],
)
def test_route_label_is_the_template(path, label):
    assert route_label(SimpleNamespace(route=SimpleNamespace(path=path))) == label


def test_unmatched_requests_share_one_label():
    assert route_label(SimpleNamespace(route=None)) == "unmatched"
