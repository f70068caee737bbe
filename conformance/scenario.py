"""A fresh engine plus workers of one SDK, torn down together: the unit every check runs in.

Hypothesis examples each get their own scenario, so no state leaks between examples.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from conformance.drivers.client import Driver, start_driver
from conformance.sdk import InstalledSdk
from fake_engine import Connection, FakeEngine

# A fast reconnection config: keeps checks short while exercising growth, cap and jitter.
FAST = {
    "initial_delay_ms": 100,
    "max_delay_ms": 800,
    "backoff_multiplier": 2.0,
    "jitter_factor": 0.3,
}
_seq = itertools.count(1)


@dataclass
class Scenario:
    engine: FakeEngine
    sdk: InstalledSdk
    stack: contextlib.AsyncExitStack

    async def worker(
        self,
        name: str | None = None,
        *,
        reconnection: Mapping[str, Any] | None = None,
        invocation_timeout_ms: int | None = None,
        connect: bool = True,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        functions: Mapping[str, Any] | None = None,
        wait_registered: bool = True,
        timeout: float = 30.0,
    ) -> Driver:
        """Start a driver; connect it; register ``functions`` {id: behaviour}; wait for them."""
        drv = await self.stack.enter_async_context(start_driver(self.sdk, env=dict(env or {})))
        drv.worker_name = name or f"conf-{self.sdk.spec.language}-{next(_seq)}"
        if connect:
            await drv.connect(
                url or self.engine.url,
                name=drv.worker_name,
                reconnection=dict(reconnection) if reconnection else None,
                invocation_timeout_ms=invocation_timeout_ms,
            )
            for fid, behaviour in (functions or {}).items():
                await drv.register_function(fid, behaviour)
            if wait_registered:
                await self.connection(drv, tuple(functions or ()), timeout=timeout)
        return drv

    async def connection(
        self, drv: Driver, functions: tuple[str, ...] = (), timeout: float = 30.0
    ) -> Connection:
        """The worker's live connection once it has registered (and owns ``functions``)."""
        return await self.engine.wait_worker(drv.worker_name, timeout=timeout, functions=functions)

    async def reconnected(
        self,
        drv: Driver,
        previous: Connection,
        functions: tuple[str, ...] = (),
        timeout: float = 30.0,
    ) -> Connection:
        """The worker's next live connection after ``previous``, registered with ``functions``."""
        eng = self.engine

        def ready() -> Connection | None:
            c = eng.worker(drv.worker_name)
            if c is None or c.id <= previous.id or c.namespace is None:
                return None
            owned = {f.id for f in eng.registry.functions_of(c.id)}
            return c if set(functions) <= owned else None

        return await eng.wait_until(
            ready, timeout, f"{drv.worker_name} to reconnect after connection {previous.id}"
        )


@contextlib.asynccontextmanager
async def scenario(
    sdk: InstalledSdk, recorder: Any = None, **engine_opts: Any
) -> AsyncIterator[Scenario]:
    """``async with scenario(iii_sdk, verdict) as s:`` a new engine, workers closed on exit."""
    async with FakeEngine(**engine_opts) as engine, contextlib.AsyncExitStack() as stack:
        if recorder is not None:
            recorder.watch(engine)
        yield Scenario(engine, sdk, stack)
