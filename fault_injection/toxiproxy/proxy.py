"""A proxy: its listener, its upstream dials and its live connections (proxy.go)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from typing import Any

from .addr import format_addr, resolve_listen, same_listen
from .connection import Connection, Endpoint
from .errors import internal
from .toxic_collection import ToxicCollection

DIAL_TIMEOUT = 10.0  # bounded upstream connect; toxiproxy relies on the OS default


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.rng = rng
        self.toxics = ToxicCollection(self)
        self.connections: set[Connection] = set()
        # [received, sent] bytes per direction, kept across connections for /metrics
        self.byte_counters: dict[str, list[int]] = {"upstream": [0, 0], "downstream": [0, 0]}
        self._server: asyncio.AbstractServer | None = None
        self._dials: dict[asyncio.Task[None], Endpoint] = {}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": self.toxics.to_json(),
        }

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the listener; ``listen`` becomes the resolved address (port 0 → real port)."""
        if self.enabled:
            return
        family, ip, port = resolve_listen(self.listen)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            reason = (exc.strerror or str(exc)).lower()
            raise internal(f"listen tcp {format_addr(ip, port)}: bind: {reason}") from None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_client, sock=sock)
        self.listen = format_addr(ip, sock.getsockname()[1])
        self.enabled = True

    async def stop(self) -> None:
        """Close the listener and every connection (toxiproxy's ``down``)."""
        if not self.enabled:
            return
        self.enabled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task, client in list(self._dials.items()):
            task.cancel()
            client.abort()
        if self._dials:
            await asyncio.wait(list(self._dials), timeout=5.0)
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Changing listen/upstream restarts the listener; same address spelled differently doesn't."""
        moved = listen != self.listen and not same_listen(self.listen, listen)
        if moved or upstream != self.upstream:
            was_enabled = self.enabled
            await self.stop()
            if moved:
                self.listen = listen
            self.upstream = upstream
            if was_enabled and enabled:
                await self.start()
                return
        if enabled and not self.enabled:
            await self.start()
        elif not enabled and self.enabled:
            await self.stop()

    def differs(self, other: Proxy) -> bool:
        if self.upstream != other.upstream:
            return True
        return self.listen != other.listen and not same_listen(self.listen, other.listen)

    # -- data plane ------------------------------------------------------------------
    def _new_client(self) -> Endpoint:
        client = Endpoint("client")
        client.on_made = self._client_connected
        return client

    def _client_connected(self, client: Endpoint) -> None:
        if not self.enabled:
            client.abort()
            return
        task = asyncio.get_running_loop().create_task(self._dial(client))
        self._dials[task] = client
        task.add_done_callback(lambda t: self._dials.pop(t, None))

    async def _dial(self, client: Endpoint) -> None:
        """Connect upstream; on failure the client sees accept-then-EOF, like toxiproxy."""
        upstream = Endpoint("upstream")
        loop = asyncio.get_running_loop()
        try:
            host, port = _split_upstream(self.upstream)
            await asyncio.wait_for(
                loop.create_connection(lambda: upstream, host, port), DIAL_TIMEOUT
            )
        except (OSError, ValueError, asyncio.TimeoutError):
            client.close()
            return
        except asyncio.CancelledError:
            upstream.abort()
            client.abort()
            raise
        if not self.enabled or client.lost:
            upstream.abort()
            client.abort()
            return
        conn = Connection(self, client, upstream)
        if not conn.closed:
            self.connections.add(conn)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(Exception):
            await self.toxics.reset()


def _split_upstream(upstream: str) -> tuple[str, int]:
    if upstream.startswith("["):
        host, _, port = upstream[1:].partition("]:")
    else:
        host, _, port = upstream.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"bad upstream {upstream!r}")
    return host or "127.0.0.1", int(port)
