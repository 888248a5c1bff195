from __future__ import annotations

import aiohttp
import pytest

from tests.support.events_receiver import EventsReceiver
from tests.support.node import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    """A real node (supervisor + worker) with the default test config, shared by a module."""
    proc = NodeProcess(tmp_path_factory.mktemp("node"), receiver.url).start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.tail()


@pytest.fixture(scope="module")
def events_receiver():
    """A receiver for job events (`events.url`), shared by a module."""
    rx = EventsReceiver().start()
    yield rx
    rx.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session
