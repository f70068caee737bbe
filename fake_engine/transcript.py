"""Everything the engine saw and did, in order, with CLOCK_MONOTONIC nanosecond timestamps.

Drivers stamp their events with the same clock (``time.monotonic_ns`` / ``process.hrtime``), so
engine and worker timelines can be compared directly.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

# Event kinds.
TCP_ACCEPT = "tcp_accept"
HTTP_REQUEST = "http_request"
HANDSHAKE = "handshake"
FRAME = "frame"
CLOSE = "close"
ABORT = "abort"
DISCONNECT = "disconnect"
NOTE = "note"

IN = "in"  # worker -> engine
OUT = "out"  # engine -> worker


@dataclass
class Event:
    """One recorded fact. ``message`` is the decoded frame (None when undecodable)."""

    t_ns: int
    conn: int
    kind: str
    direction: str | None = None
    opcode: str | None = None
    raw: str | None = None
    message: dict[str, Any] | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        """The protocol message type of a decoded frame."""
        return self.message.get("type") if self.message else None

    def to_json(self) -> str:
        d = {k: v for k, v in asdict(self).items() if v not in (None, {})}
        return json.dumps(d, separators=(",", ":"), default=str)


Predicate = Callable[[Event], bool]


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message names what was awaited and what was seen."""


class Transcript:
    """Append-only event log with queries and awaitable waits."""

    def __init__(self, sink: TextIO | None = None, live: Callable[[Event], None] | None = None):
        self.events: list[Event] = []
        self._waiters: list[tuple[Predicate, asyncio.Future[Event]]] = []
        self._sink = sink
        self._live = live

    def record(self, conn: int, kind: str, **kw: Any) -> Event:
        ev = Event(time.monotonic_ns(), conn, kind, **kw)
        self.events.append(ev)
        if self._sink is not None:
            self._sink.write(ev.to_json() + "\n")
        if self._live is not None:
            self._live(ev)
        if self._waiters:
            still = []
            for pred, fut in self._waiters:
                if fut.done():
                    continue
                if pred(ev):
                    fut.set_result(ev)
                else:
                    still.append((pred, fut))
            self._waiters = still
        return ev

    def note(self, conn: int, what: str, **detail: Any) -> Event:
        return self.record(conn, NOTE, detail={"what": what, **detail})

    # -- queries -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self.events))

    def __len__(self) -> int:
        return len(self.events)

    def select(self, pred: Predicate | None = None, since: int = 0) -> list[Event]:
        return [e for e in self.events[since:] if pred is None or pred(e)]

    def frames(
        self,
        conn: int | None = None,
        direction: str | None = None,
        type: str | None = None,
        since: int = 0,
    ) -> list[Event]:
        """Frames (optionally of one connection, direction and message type)."""
        return [
            e
            for e in self.events[since:]
            if e.kind == FRAME
            and (conn is None or e.conn == conn)
            and (direction is None or e.direction == direction)
            and (type is None or e.type == type)
        ]

    def messages(
        self,
        conn: int | None = None,
        direction: str | None = IN,
        type: str | None = None,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        return [e.message for e in self.frames(conn, direction, type, since) if e.message]

    def notes(self, what: str | None = None, since: int = 0) -> list[Event]:
        return [
            e
            for e in self.events[since:]
            if e.kind == NOTE and (what is None or e.detail.get("what") == what)
        ]

    def connections(self) -> list[int]:
        """Ids of every connection that completed a handshake, in accept order."""
        return [
            e.conn
            for e in self.events
            if e.kind == HANDSHAKE
            and e.detail.get("result") == "accepted"
            and e.detail.get("path") == "/"
        ]

    def connections_of(self, worker_name: str) -> list[int]:
        """Connections whose ``engine::workers::register`` named this worker."""
        return [
            e.conn for e in self.notes("worker_metadata") if e.detail.get("name") == worker_name
        ]

    def dial_times(self, since: int = 0, path: str | None = "/") -> list[int]:
        """Monotonic ns of each HTTP upgrade request (a dial attempt as the engine sees it)."""
        return [
            e.t_ns
            for e in self.events[since:]
            if e.kind == HTTP_REQUEST
            and (path is None or e.detail.get("path", "").split("?")[0] == path)
        ]

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_for(
        self, pred: Predicate, timeout: float, what: str = "an event", since: int = 0
    ) -> Event:
        """The first event (at index >= since) matching ``pred``; fails clearly after ``timeout``."""
        for ev in self.events[since:]:
            if pred(ev):
                return ev
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            tail = "\n".join(e.to_json()[:300] for e in self.events[-8:])
            raise WaitTimeout(
                f"timed out after {timeout:.1f}s waiting for {what}; last events:\n{tail}"
            ) from None

    async def wait_frame(
        self,
        type: str,
        *,
        conn: int | None = None,
        direction: str = IN,
        timeout: float = 10.0,
        since: int = 0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Event:
        def pred(e: Event) -> bool:
            return (
                e.kind == FRAME
                and e.direction == direction
                and e.type == type
                and (conn is None or e.conn == conn)
                and (where is None or where(e.message or {}))
            )

        who = f" on connection {conn}" if conn is not None else ""
        return await self.wait_for(pred, timeout, f"a `{type}` frame {direction}{who}", since)

    # -- export ----------------------------------------------------------------------------------

    def to_jsonl(self) -> str:
        return "".join(e.to_json() + "\n" for e in self.events)

    def write_jsonl(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_jsonl())
