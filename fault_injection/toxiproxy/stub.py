"""The runtime of one toxic on one link (toxiproxy's ``ToxicStub``).

A stub owns an inbox (a deque: putting never blocks, so rewiring a chain is a plain
pointer swap with no in-flight sends) and forwards to ``out``, which is the next
stub or the link's sink. It can be interrupted at any await point so a toxic can be
updated or removed without losing or reordering bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .link import Link
    from .toxics import ToxicSpec


class Chunk:
    """Bytes plus the loop time they arrived at the proxy (latency is measured from it)."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float) -> None:
        self.data = data
        self.ts = ts


EOF = None  # like Go's closed channel: the end of a stream
TIMEOUT: Any = object()


class Interrupted(Exception):
    """Raised inside a toxic's pipe when the link wants it to stop."""


class Receiver(Protocol):
    def put(self, item: Chunk | None) -> None: ...


class Stub:
    __slots__ = (
        "link",
        "spec",
        "state",
        "inbox",
        "out",
        "closed",
        "task",
        "reason",
        "_waiter",
        "_want_item",
        "_interrupted",
    )

    def __init__(self, link: Link, spec: ToxicSpec, state: Any, out: Receiver) -> None:
        self.link = link
        self.spec = spec
        self.state = state
        self.inbox: deque[Chunk | None] = deque()
        self.out: Receiver = out
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.reason = "link"  # why the toxic (re)started: "link", "add" or "update"
        self._waiter: asyncio.Future[None] | None = None
        self._want_item = False
        self._interrupted = False

    # -- plumbing used by the link -------------------------------------------------
    def put(self, item: Chunk | None) -> None:
        self.inbox.append(item)
        waiter = self._waiter
        if waiter is not None and self._want_item and not waiter.done():
            waiter.set_result(None)

    def start(self, reason: str) -> None:
        """Run the toxic; toxicity is drawn once here, per (re)start."""
        self.reason = reason
        self._interrupted = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        spec = self.spec
        active = self.link.rng.random() < spec.toxicity
        pipe = spec.kind.pipe if active else spec.kind.noop_pipe
        try:
            await pipe(self, spec.attributes)
        except Interrupted:
            pass

    async def interrupt(self) -> bool:
        """Stop the running toxic; False if the stub had already closed its output."""
        task = self.task
        if task is None or self.closed:
            return not self.closed
        self._interrupted = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await asyncio.wait({task})
        return not self.closed

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # -- API for toxic pipes ---------------------------------------------------------
    async def _wait(self, want_item: bool, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        self._want_item = want_item
        handle = None
        if timeout is not None:
            handle = loop.call_later(max(timeout, 0.0), _resolve, fut)
        try:
            await fut
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def recv(self, timeout: float | None = None) -> Chunk | None:
        """Next chunk (``EOF`` at end); ``TIMEOUT`` if ``timeout`` s pass without one."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._interrupted:
                raise Interrupted
            if self.inbox:
                return self.inbox.popleft()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return TIMEOUT
            await self._wait(True, remaining)

    async def sleep(self, seconds: float, interruptible: bool = True) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if interruptible and self._interrupted:
                raise Interrupted
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await self._wait(False, remaining)

    def send(self, chunk: Chunk) -> None:
        self.out.put(chunk)

    def drop(self, chunk: Chunk) -> None:
        """Discard data (blackholes); frees the link's flow-control budget."""
        self.link.release(len(chunk.data))

    def close(self) -> None:
        """End the stream downstream of this toxic (Go's ``stub.Close``)."""
        if not self.closed:
            self.closed = True
            self.out.put(EOF)

    def unget(self, item: Chunk | None) -> None:
        """Put back an item taken but not handled, so nothing is lost on interrupt."""
        self.inbox.appendleft(item)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
