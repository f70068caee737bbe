"""A minimal hand-driven worker over a real websockets client, for engine-level tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from fake_engine import FakeEngine


class RawWorker:
    """Speaks the protocol by hand so tests control every frame."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.registered: dict[str, Any] | None = None
        self._reader = asyncio.create_task(self._read())
        self.answer = True

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if msg.get("type") == "workerregistered":
                self.registered = msg
                continue
            if msg.get("type") == "invokefunction" and self.answer:
                if msg["function_id"].endswith("::echo"):
                    await self.send(
                        type="invocationresult",
                        invocation_id=msg["invocation_id"],
                        function_id=msg["function_id"],
                        result=msg["data"],
                    )
                    continue
            await self.inbox.put(msg)

    async def send(self, **msg: Any) -> None:
        await self.ws.send(json.dumps(msg))

    async def register(self, name: str, *functions: str) -> None:
        for f in functions:
            await self.send(type="registerfunction", id=f)
        await self.send(
            type="invokefunction",
            function_id="engine::workers::register",
            data={"name": name, "pid": 1, "runtime": "raw"},
            action={"type": "void"},
        )

    async def next(self, type: str, timeout: float = 5.0) -> dict[str, Any]:
        async def first() -> dict[str, Any]:
            while True:
                msg = await self.inbox.get()
                if msg.get("type") == type:
                    return msg

        return await asyncio.wait_for(first(), timeout)

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


@pytest.fixture
async def engine():
    async with FakeEngine() as e:
        yield e


@pytest.fixture
async def raw_worker(engine):
    """Factory: ``w = await raw_worker()`` connects a hand-driven worker to the engine."""
    made: list[RawWorker] = []

    async def make(url: str | None = None) -> RawWorker:
        ws = await connect(url or engine.url, ping_interval=None, open_timeout=5)
        w = RawWorker(ws)
        made.append(w)
        return w

    yield make
    for w in made:
        await w.close()
