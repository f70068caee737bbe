"""A proxied TCP connection: two socket endpoints and the two links between them."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from .link import Link

if TYPE_CHECKING:
    from .proxy import Proxy

_LINGER_ZERO = struct.pack("ii", 1, 0)


class Endpoint(asyncio.Protocol):
    """One socket. Protocol callbacks feed the link it is the source of, synchronously.

    With no toxics, bytes go from ``data_received`` straight to the other socket's
    ``write`` in the same callback, which keeps the proxy's added latency low.
    """

    def __init__(self, side: str) -> None:
        self.side = side  # "client" or "upstream"
        self.transport: asyncio.Transport | None = None
        self.source_of: Link | None = None  # link reading from this socket
        self.dest_of: Link | None = None  # link writing to this socket
        self.conn: Connection | None = None
        self.lost = False
        self._early: list[bytes] = []
        self._early_eof = False
        self._pause_reasons: set[str] = set()
        self.on_made: Callable[[Endpoint], None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.source_of is None:
            self.pause("setup")  # until both sides are connected and linked
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        link = self.source_of
        if link is None:
            self._early.append(data)
        else:
            link.feed(data)

    def eof_received(self) -> bool:
        link = self.source_of
        if link is None:
            self._early_eof = True
        else:
            link.feed_eof()
        return True  # keep the socket open: EOF travels through the chain (slow_close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.source_of is not None:
            self.source_of.feed_eof()
        else:
            self._early_eof = True
        if self.conn is not None:
            self.conn.endpoint_lost()

    def pause_writing(self) -> None:
        if self.dest_of is not None:
            self.dest_of.source.pause("dest")

    def resume_writing(self) -> None:
        if self.dest_of is not None:
            self.dest_of.source.resume("dest")

    # -- used by links and the connection ----------------------------------------------
    def attach(self, conn: Connection, source_of: Link, dest_of: Link) -> None:
        self.conn, self.source_of, self.dest_of = conn, source_of, dest_of
        early, self._early = self._early, []
        for data in early:
            source_of.feed(data)
        if self._early_eof:
            source_of.feed_eof()
        self.resume("setup")

    def pause(self, reason: str) -> None:
        self._pause_reasons.add(reason)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None:
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def close(self) -> None:
        """Graceful close (flush, then FIN; RST if SO_LINGER 0 was set)."""
        if self.transport is not None:
            self.transport.close()

    def set_linger_zero(self) -> None:
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            except OSError:
                pass

    def reset(self) -> None:
        """Abort with RST and no FIN: the peer sees ECONNRESET."""
        self.set_linger_zero()
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Connection:
    def __init__(self, proxy: Proxy, client: Endpoint, upstream: Endpoint) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.frozen = False  # set by half_open: sinks drop data and ignore EOF
        self._timers: list[asyncio.TimerHandle] = []
        self._closed = False
        chains = proxy.toxics.chains
        rng = proxy.rng
        self.links = {
            "upstream": Link(self, "upstream", client, upstream, chains["upstream"], rng),
            "downstream": Link(self, "downstream", upstream, client, chains["downstream"], rng),
        }
        for link in self.links.values():
            if link.has_linger_toxic():  # reset_peer present when the link starts
                link.source.set_linger_zero()
                link.dest.set_linger_zero()
        client.attach(self, self.links["upstream"], self.links["downstream"])
        upstream.attach(self, self.links["downstream"], self.links["upstream"])
        if client.lost or upstream.lost:
            self.endpoint_lost()

    @property
    def closed(self) -> bool:
        return self._closed

    def endpoint_lost(self) -> None:
        if self.client.lost and self.upstream.lost:
            self.teardown()

    def half_open(self, side: str, delay_ms: int) -> None:
        if self.frozen or self._closed:
            return
        self.frozen = True
        cut, other = (
            (self.client, self.upstream) if side == "client" else (self.upstream, self.client)
        )
        cut.reset()
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(max(delay_ms, 0) / 1000.0, other.close))

    def abort(self) -> None:
        """Drop both sockets now (proxy disabled or deleted)."""
        self.client.abort()
        self.upstream.abort()
        self.teardown()

    def teardown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        for link in self.links.values():
            link.cancel()
        self.proxy.forget(self)
