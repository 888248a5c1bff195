from __future__ import annotations

import pytest

from supervisor.status import readiness
from supervisor.worker_state import WorkerState as S


@pytest.mark.parametrize(
    "state, draining, expected",
    [
        (S.READY, False, "ok"),
        (S.BUSY, False, "ok"),
        (S.STARTING, False, "loading"),
        (S.STOPPED, False, "loading"),
        (S.RESTARTING, False, "restarting"),
        (S.FAILED, False, "failed"),
        (S.READY, True, "draining"),
        (S.RESTARTING, True, "draining"),
    ],
)
def test_readiness(state, draining, expected):
    assert readiness(state, draining) == expected
