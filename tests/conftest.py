from __future__ import annotations

import pytest

from tests.support.receiver import CallbackReceiver


@pytest.fixture(scope="session")
def receiver():
    """One Asset Service stand-in for the whole run; tests tell their callbacks apart by job id."""
    rx = CallbackReceiver().start()
    yield rx
    rx.stop()
