"""The embedded toxiproxy: run in the caller's event loop or in a background thread."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from . import decode
from .api import ApiServer
from .collection import ProxyCollection
from .http import HttpServer

VERSION = "2.12.0+iii.embedded"  # semver-valid; "+iii.embedded" marks it as not the Go server


class EmbeddedToxiproxy:
    """``async with EmbeddedToxiproxy() as server: server.url`` — toxiproxy 2.x API in-process.

    Binds loopback by default; ``seed`` makes toxicity, jitter and slicer draws repeatable.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        *,
        metrics: bool = False,
        version: str = VERSION,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.rng = random.Random(seed)
        self.collection = ProxyCollection(self.rng)
        self.api = ApiServer(self.collection, version, metrics=metrics)
        self._http = HttpServer(self.api.handle)
        self._started = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> EmbeddedToxiproxy:
        self.port = await self._http.start(self.host, self.port)
        self._started = True
        return self

    async def stop(self) -> None:
        """Close the API, then every proxy listener and connection."""
        if not self._started:
            return
        self._started = False
        await self._http.close()
        await self.collection.clear()

    async def populate(self, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Same rules as ``POST /populate`` (used by ``-config``)."""
        return [p.to_json() for p in await self.collection.populate(proxies)]

    async def populate_file(self, path: str | Path) -> list[dict[str, Any]]:
        raw = await asyncio.to_thread(Path(path).read_bytes)
        return await self.populate(decode.parse_body(raw) if raw.strip() else [])

    async def __aenter__(self) -> EmbeddedToxiproxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    def start_in_thread(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        *,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> ThreadedToxiproxy:
        """Run in a daemon thread with its own loop, for sync/blocking clients (toxiproxy-python)."""
        return ThreadedToxiproxy(cls(host, port, seed, **kwargs), timeout)


class ThreadedToxiproxy:
    """Handle for a thread-backed server: ``.url``, ``.stop()``, usable as a context manager."""

    def __init__(self, server: EmbeddedToxiproxy, timeout: float) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="iii-toxiproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop(timeout)
            raise TimeoutError(f"embedded toxiproxy did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # report bind errors to the starting thread
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            try:
                self._loop.run_until_complete(self.server.stop())
                pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self._loop.run_until_complete(asyncio.wait(pending, timeout=5.0))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop from another thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive() and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"embedded toxiproxy thread did not stop within {timeout} s")

    def __enter__(self) -> ThreadedToxiproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
