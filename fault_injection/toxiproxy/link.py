"""One direction of a proxied connection: source socket → chain of stubs → sink.

Chain edits happen on the event loop with no await between reading and rewiring
pointers, so bytes are neither lost nor reordered:
* add: the new stub feeds the sink and the old tail (or the source) feeds the stub;
* remove: interrupt the stub (it forwards what it holds), move its leftover inbox to
  its output, then point its predecessor at that output;
* update: interrupt and restart the same stub (same inbox, same per-link state).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from .stub import EOF, Chunk, Receiver, Stub
from .toxics import ToxicSpec

if TYPE_CHECKING:
    from .connection import Connection, Endpoint

HIGH_WATER = 1 << 20  # bytes held inside the chain before the source stops being read
LOW_WATER = HIGH_WATER // 4


class Sink:
    """End of the chain: writes to the destination socket; EOF closes it (like Go)."""

    __slots__ = ("link", "dest", "done")

    def __init__(self, link: Link, dest: Endpoint) -> None:
        self.link = link
        self.dest = dest
        self.done = False

    def put(self, item: Chunk | None) -> None:
        link = self.link
        if item is EOF:
            if self.done or link.conn.frozen:
                return  # a half-open cut closes sockets on its own schedule
            self.done = True
            self.dest.close()
            return
        n = len(item.data)
        link.release(n)
        if self.done or link.conn.frozen:
            return
        if self.dest.write(item.data):
            link.counters[1] += n


class Link:
    def __init__(
        self,
        conn: Connection,
        direction: str,
        source: Endpoint,
        dest: Endpoint,
        specs: list[ToxicSpec],
        rng: random.Random,
    ) -> None:
        self.conn = conn
        self.direction = direction
        self.source = source
        self.dest = dest
        self.rng = rng
        self.sink = Sink(self, dest)
        self.stubs: list[Stub] = []
        self.pending = 0
        self.counters = conn.proxy.byte_counters[direction]  # [received, sent]
        self._eof_fed = False
        for spec in specs:
            self._append(spec).start("link")

    @property
    def entry(self) -> Receiver:
        return self.stubs[0] if self.stubs else self.sink

    # -- data path -------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self._eof_fed:
            return
        n = len(data)
        self.pending += n
        self.counters[0] += n
        self.entry.put(Chunk(data, asyncio.get_running_loop().time()))
        if self.pending > HIGH_WATER:
            self.source.pause("budget")

    def feed_eof(self) -> None:
        if not self._eof_fed:
            self._eof_fed = True
            self.entry.put(EOF)

    def release(self, n: int) -> None:
        self.pending -= n
        if self.pending <= LOW_WATER:
            self.source.resume("budget")

    # -- chain edits (called with the proxy's toxic lock held) -----------------------
    def _append(self, spec: ToxicSpec) -> Stub:
        stub = Stub(self, spec, spec.kind.new_state(), self.sink)
        if self.stubs:
            self.stubs[-1].out = stub
        self.stubs.append(stub)
        return stub

    def add_toxic(self, spec: ToxicSpec) -> None:
        tail_closed = bool(self.stubs) and self.stubs[-1].closed
        stub = self._append(spec)
        if tail_closed or self.sink.done:
            stub.closed = True  # the link already ended; keep the chain shape only
            return
        stub.start("add")

    def _find(self, name: str) -> int:
        for i, stub in enumerate(self.stubs):
            if stub.spec.name == name:
                return i
        return -1

    async def update_toxic(self, spec: ToxicSpec) -> None:
        i = self._find(spec.name)
        if i < 0:
            return
        stub = self.stubs[i]
        if await stub.interrupt():
            stub.spec = spec
            stub.start("update")

    async def remove_toxic(self, spec: ToxicSpec) -> None:
        i = self._find(spec.name)
        if i < 0:
            return
        stub = self.stubs[i]
        alive = await stub.interrupt()
        i = self.stubs.index(stub)  # unchanged: edits are serialised, but be exact
        if alive and spec.kind.closes_on_removal:
            stub.close()
            alive = False
        if alive:
            while stub.inbox:
                stub.out.put(stub.inbox.popleft())
        else:
            for item in stub.inbox:
                if item is not EOF:
                    self.release(len(item.data))
            stub.inbox.clear()
        if i > 0:
            self.stubs[i - 1].out = stub.out
        del self.stubs[i]
        stub.out = _Discard(self)
        if not alive and stub.task is not None:
            stub.cancel()

    def has_linger_toxic(self) -> bool:
        return any(s.spec.kind.sets_linger for s in self.stubs)

    def cancel(self) -> None:
        for stub in self.stubs:
            stub.cancel()


class _Discard:
    """Where a removed stub's late output goes: nowhere, but budget is released."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def put(self, item: Chunk | None) -> None:
        if item is not EOF:
            self.link.release(len(item.data))
