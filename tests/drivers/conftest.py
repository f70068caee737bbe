"""Fixtures for driver tests: installed SDKs and a loopback engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conformance.sdk import InstalledSdk, SdkInstallError, install, parse_sdk_spec

PYTHON_SDK = "python@0.25.0"
NODE_SDK = "node@0.22.1"


@pytest.fixture(scope="session")
def python_sdk() -> InstalledSdk:
    return install(parse_sdk_spec(PYTHON_SDK))


@pytest.fixture(scope="session")
def node_sdk() -> InstalledSdk:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    try:
        return install(parse_sdk_spec(NODE_SDK))
    except SdkInstallError:
        raise


@pytest.fixture(params=["python", "node"])
def sdk(request: pytest.FixtureRequest) -> InstalledSdk:
    return request.getfixturevalue(f"{request.param}_sdk")


# --- engines ------------------------------------------------------------------------------
# Prefer fake_engine.FakeEngine; fall back to a tiny in-test server if it cannot be imported.


class _FakeEngineAdapter:
    kind = "fake_engine"

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.url = engine.url

    async def wait_function(self, worker_name: str, function_id: str, timeout: float = 15) -> None:
        await self.engine.wait_worker(worker_name, timeout=timeout, functions=(function_id,))

    async def invoke(self, function_id: str, data: Any, timeout: float = 10) -> tuple[Any, Any]:
        out = await self.engine.invoke(function_id, data, timeout=timeout)
        return out.result, out.error

    def blackhole(self, function_id: str) -> None:
        self.engine.intercept(function_id, never=True)


class _MiniEngine:
    """Accepts workers, sends workerregistered, records frames, never answers their calls."""

    kind = "mini"

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.conns: list[Any] = []
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.url = ""

    async def _handler(self, ws: Any) -> None:
        path = getattr(getattr(ws, "request", None), "path", "/")
        if path != "/":
            async for _ in ws:
                pass
            return
        self.conns.append(ws)
        await ws.send(
            json.dumps(
                {
                    "type": "workerregistered",
                    "worker_id": str(uuid.uuid4()),
                    "reattach_token": str(uuid.uuid4()),
                }
            )
        )
        async for raw in ws:
            msg = json.loads(raw)
            self.frames.append(msg)
            if msg.get("type") == "invocationresult":
                fut = self.pending.pop(msg.get("invocation_id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    async def wait_function(self, worker_name: str, function_id: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not any(
            f.get("type") == "registerfunction" and f.get("id") == function_id for f in self.frames
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{function_id} never registered")
            await asyncio.sleep(0.02)

    async def invoke(self, function_id: str, data: Any, timeout: float = 10) -> tuple[Any, Any]:
        inv = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        self.pending[inv] = fut
        msg = {"type": "invokefunction", "invocation_id": inv, "function_id": function_id}
        msg["data"] = data
        await self.conns[-1].send(json.dumps(msg))
        res = await asyncio.wait_for(fut, timeout)
        return res.get("result"), res.get("error")

    def blackhole(self, function_id: str) -> None:
        pass  # never answers anything

    def frames_from_worker(self) -> list[dict[str, Any]]:
        return list(self.frames)


@contextlib.asynccontextmanager
async def loopback_engine() -> AsyncIterator[Any]:
    try:
        from fake_engine import FakeEngine
    except Exception:  # not there yet / broken: use the minimal server
        FakeEngine = None  # noqa: N806
    if FakeEngine is not None:
        async with FakeEngine() as engine:
            yield _FakeEngineAdapter(engine)
        return
    import websockets

    mini = _MiniEngine()
    async with websockets.serve(mini._handler, "127.0.0.1", 0, ping_interval=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        mini.url = f"ws://127.0.0.1:{port}"
        yield mini


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    async with loopback_engine() as e:
        yield e
