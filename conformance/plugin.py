"""pytest plugin: the harness's fixtures are its public API (``fake_engine``, ``sdk_worker``...)."""

from __future__ import annotations

import pytest_asyncio

from fake_engine import FakeEngine


@pytest_asyncio.fixture
async def fake_engine():
    """A fresh fake engine on an ephemeral loopback port, stopped after the test."""
    async with FakeEngine() as engine:
        yield engine
