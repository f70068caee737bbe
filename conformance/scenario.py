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
from fault_injection.apply import FaultTarget, run_schedule
from fault_injection.schedule import Schedule
from fault_injection.toxiproxy_client import toxiproxy_server

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
    proxy: Any = None  # a toxiproxy Proxy in front of the engine, with via_proxy=True
    toxiproxy: Any = None  # its ToxiproxyHandle (embedded or TOXIPROXY_URL)

    @property
    def url(self) -> str:
        """Where workers dial: through the proxy when there is one."""
        if self.proxy is None:
            return self.engine.url
        host, port = self.proxy.listen_host_port
        return f"ws://{host}:{port}"

    async def faults(self, schedule: Schedule, conn: Any = None) -> list[dict[str, Any]]:
        """Run a fault schedule now; record it so a failure carries its replayable text."""
        target = FaultTarget(
            self.engine,
            proxy=self.proxy,
            embedded=self.toxiproxy is None or self.toxiproxy.embedded,
            conn=conn,
        )
        return await run_schedule(schedule, target)

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
                url or self.url,
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
    sdk: InstalledSdk, recorder: Any = None, *, via_proxy: bool = False, **engine_opts: Any
) -> AsyncIterator[Scenario]:
    """``async with scenario(iii_sdk, verdict) as s:`` a new engine, workers closed on exit.

    ``via_proxy=True`` puts a toxiproxy proxy (``TOXIPROXY_URL`` or the embedded server) between
    the workers and the engine, for network faults.
    """
    async with FakeEngine(**engine_opts) as engine, contextlib.AsyncExitStack() as stack:
        if recorder is not None:
            recorder.watch(engine)
        proxy = handle = None
        if via_proxy:
            handle = await stack.enter_async_context(toxiproxy_server())
            proxy = await handle.call(
                "create",
                upstream=f"127.0.0.1:{engine.port}",
                name=f"iii-conformance-{engine.port}",
                listen="127.0.0.1:0",
            )
            stack.push_async_callback(_destroy, handle, proxy)
        yield Scenario(engine, sdk, stack, proxy, handle)


async def _destroy(handle: Any, proxy: Any) -> None:
    with contextlib.suppress(Exception):  # the server may be gone already; never mask the check
        await handle.call("destroy", proxy)
