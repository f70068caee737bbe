"""Toxic types: attribute schemas and the pipe coroutine that implements each one.

Semantics follow toxiproxy 2.12 ``toxics/*.go``; ``half_open`` is an addition for the
iii reconnect race (worker side cut at once, engine side closed ``delay`` ms later).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from . import decode
from .errors import BAD_REQUEST_BODY, INVALID_STREAM, INVALID_TOXIC_TYPE, TOXIC_ALREADY_EXISTS
from .stub import EOF, TIMEOUT, Chunk, Interrupted, Stub

Pipe = Callable[[Stub, dict[str, Any]], Awaitable[None]]
DIRECTIONS = ("upstream", "downstream")  # Go's order: upstream chain is listed first


async def noop_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    while True:
        chunk = await stub.recv()
        if chunk is EOF:
            stub.close()
            return
        stub.send(chunk)


async def latency_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    """Delay each chunk to arrival + latency ± jitter, so a stream is pipelined."""
    loop = asyncio.get_running_loop()
    rng = stub.link.rng
    while True:
        chunk = await stub.recv()
        if chunk is EOF:
            stub.close()
            return
        delay_ms = attrs["latency"]
        jitter = attrs["jitter"]
        if jitter > 0:
            delay_ms += rng.randrange(2 * jitter) - jitter
        sleep = delay_ms / 1000.0 - (loop.time() - chunk.ts)
        try:
            await stub.sleep(sleep)
        except Interrupted:
            stub.send(chunk)  # toxiproxy forwards the in-flight chunk at once on removal
            raise
        chunk.ts += sleep  # stacked latency toxics add up
        stub.send(chunk)


async def bandwidth_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    """Limit to ``rate`` KB/s (1 KB = 1000 B), in slices of at most 100 ms of data.

    Sleeps are scheduled against a running deadline (from the first chunk's arrival) so
    timer overshoot does not accumulate across the chunks of a busy stream.
    """
    loop = asyncio.get_running_loop()
    rate = attrs["rate"]
    next_free = 0.0
    while True:
        chunk = await stub.recv()
        if chunk is EOF:
            stub.close()
            return
        if rate <= 0:
            stub.send(chunk)
            continue
        data = chunk.data
        slice_size = rate * 100
        # Busy stream: continue from the previous chunk's ideal end; idle: from arrival.
        start = max(chunk.ts, next_free)
        while data:
            piece, data = data[:slice_size], data[slice_size:]
            end = start + len(piece) / (rate * 1000.0)
            try:
                await stub.sleep(end - loop.time())
            except Interrupted:
                stub.send(Chunk(piece + data, chunk.ts))
                raise
            stub.send(Chunk(piece, chunk.ts))
            start = end
        next_free = start


async def slow_close_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    while True:
        chunk = await stub.recv()
        if chunk is EOF:
            try:
                await stub.sleep(attrs["delay"] / 1000.0)
            except Interrupted:
                stub.unget(EOF)
                raise
            stub.close()
            return
        stub.send(chunk)


async def timeout_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    """Blackhole; close after ``timeout`` ms with no incoming chunk (re-armed per chunk)."""
    timeout = attrs["timeout"]
    wait = timeout / 1000.0 if timeout > 0 else None
    while True:
        chunk = await stub.recv(wait)
        if chunk is TIMEOUT or chunk is EOF:
            stub.close()
            return
        stub.drop(chunk)


async def reset_peer_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    """On the first chunk or EOF wait ``timeout`` ms then close (RST via SO_LINGER 0)."""
    chunk = await stub.recv()
    if chunk is not EOF:
        stub.drop(chunk)
    # toxiproxy blocks removal until this wait ends; we close at once instead, so an API
    # call never waits out a long timeout (the connection is reset either way).
    try:
        await stub.sleep(attrs["timeout"] / 1000.0)
    finally:
        stub.close()


def slice_bounds(
    start: int, end: int, average: int, variation: int, rng: random.Random
) -> list[int]:
    """Split ``[start, end)`` near midpoints until pieces are ≤ average + variation."""
    if average + variation <= 0:
        return [start, end]
    bounds = [start]
    stack = [(start, end)]
    while stack:
        lo, hi = stack.pop()
        if (hi - lo) - average <= variation:
            bounds.append(hi)
            continue
        mid = lo + (hi - lo) // 2
        if variation > 0:
            mid += rng.randrange(variation * 2) - variation
        mid = min(max(mid, lo + 1), hi - 1)  # Go would panic on an empty side
        stack.append((mid, hi))
        stack.append((lo, mid))
    return bounds


async def slicer_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    rng = stub.link.rng
    while True:
        chunk = await stub.recv()
        if chunk is EOF:
            stub.close()
            return
        data = chunk.data
        bounds = slice_bounds(0, len(data), attrs["average_size"], attrs["size_variation"], rng)
        for i in range(1, len(bounds)):
            stub.send(Chunk(data[bounds[i - 1] : bounds[i]], chunk.ts))
            try:
                await stub.sleep(attrs["delay"] / 1_000_000.0)
            except Interrupted:
                if bounds[i] < len(data):
                    stub.send(Chunk(data[bounds[i] :], chunk.ts))
                raise


@dataclass
class LimitState:
    transmitted: int = 0


async def limit_data_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    """Forward at most ``bytes`` per link (state survives restarts), then close."""
    state: LimitState = stub.state
    limit = attrs["bytes"]
    while True:
        chunk = await stub.recv()
        if chunk is EOF:
            stub.close()
            return
        remaining = max(limit - state.transmitted, 0)
        if len(chunk.data) > remaining:
            stub.link.release(len(chunk.data) - remaining)
            chunk.data = chunk.data[:remaining]
        if chunk.data:
            state.transmitted += len(chunk.data)
            stub.send(chunk)
        if state.transmitted >= limit:
            stub.close()
            return


async def half_open_pipe(stub: Stub, attrs: dict[str, Any]) -> None:
    """Cut ``side`` now (RST), close the other side after ``delay`` ms, drop data meanwhile.

    Fires at once when started by a toxic add/update (existing connections) and on the
    first chunk or EOF of this stream for connections made while the toxic exists.
    """
    if stub.reason == "link":
        chunk = await stub.recv()
        if chunk is not EOF:
            stub.drop(chunk)
    stub.link.conn.half_open(attrs["side"], attrs["delay"])
    while True:
        chunk = await stub.recv()
        if chunk is EOF:
            return
        stub.drop(chunk)


@dataclass(frozen=True)
class ToxicKind:
    name: str
    pipe: Pipe
    attributes: tuple[tuple[str, str, Any], ...]  # (name, "int"|"string", default)
    stateful: bool = False
    closes_on_removal: bool = False  # toxiproxy's CleanupToxic
    sets_linger: bool = False  # reset_peer: SO_LINGER 0 on links started while present
    noop_pipe: Pipe = noop_pipe

    def new_state(self) -> Any:
        return LimitState() if self.stateful else None


def _int_attrs(*names: str) -> tuple[tuple[str, str, Any], ...]:
    return tuple((n, "int", 0) for n in names)


KINDS: dict[str, ToxicKind] = {
    k.name: k
    for k in (
        ToxicKind("noop", noop_pipe, ()),
        ToxicKind("latency", latency_pipe, _int_attrs("latency", "jitter")),
        ToxicKind("bandwidth", bandwidth_pipe, _int_attrs("rate")),
        ToxicKind("slow_close", slow_close_pipe, _int_attrs("delay")),
        ToxicKind("timeout", timeout_pipe, _int_attrs("timeout"), closes_on_removal=True),
        ToxicKind("reset_peer", reset_peer_pipe, _int_attrs("timeout"), sets_linger=True),
        ToxicKind("slicer", slicer_pipe, _int_attrs("average_size", "size_variation", "delay")),
        ToxicKind("limit_data", limit_data_pipe, _int_attrs("bytes"), stateful=True),
        ToxicKind("half_open", half_open_pipe, (("side", "string", "client"), ("delay", "int", 0))),
    )
}

_GO_TYPE_NAMES = {
    "noop": "NoopToxic",
    "latency": "LatencyToxic",
    "bandwidth": "BandwidthToxic",
    "slow_close": "SlowCloseToxic",
    "timeout": "TimeoutToxic",
    "reset_peer": "ResetToxic",
    "slicer": "SlicerToxic",
    "limit_data": "LimitDataToxic",
    "half_open": "HalfOpenToxic",
}


@dataclass
class ToxicSpec:
    """A toxic as configured through the API (Go's ``ToxicWrapper``)."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> ToxicKind:
        return KINDS[self.type]

    @property
    def direction(self) -> str:
        return self.stream.lower()

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }

    @classmethod
    def parse_create(
        cls, body: Any, exists: Callable[[str], object | None] = lambda _: None
    ) -> ToxicSpec:
        """Decode a create body with toxiproxy's defaults and check order.

        Order matters for which error wins: body, stream, type, duplicate name, attributes.
        """
        obj = decode.expect_object(body, "toxics.ToxicWrapper")
        name = _opt(obj, "name", decode.as_string, "")
        ttype = _opt(obj, "type", decode.as_string, "")
        stream = _opt(obj, "stream", decode.as_string, "downstream")
        toxicity = _opt(obj, "toxicity", decode.as_float32, 1.0)
        attrs_raw = decode.field(obj, "attributes")
        if stream.lower() not in DIRECTIONS:
            raise INVALID_STREAM
        if not name:
            name = f"{ttype}_{stream}"
        if ttype not in KINDS:
            raise INVALID_TOXIC_TYPE
        if exists(name) is not None:
            raise TOXIC_ALREADY_EXISTS
        spec = cls(name, ttype, stream, toxicity, {a: d for a, _, d in KINDS[ttype].attributes})
        spec.attributes = _decode_attributes(spec, attrs_raw)
        return spec

    def parse_update(self, body: Any) -> ToxicSpec:
        """Partial update: only ``attributes`` (merged) and ``toxicity`` change."""
        obj = decode.expect_object(body, "struct { Attributes interface {}; Toxicity float32 }")
        toxicity = _opt(obj, "toxicity", decode.as_float32, self.toxicity)
        updated = replace(self, toxicity=toxicity)
        updated.attributes = _decode_attributes(self, decode.field(obj, "attributes"))
        return updated


def _opt(obj: dict[str, Any], key: str, conv: Callable[[Any, str], Any], default: Any) -> Any:
    value = decode.field(obj, key)
    if decode.is_missing(value):
        return default
    return conv(value, f"ToxicWrapper.{key}")


def _decode_attributes(spec: ToxicSpec, raw: Any) -> dict[str, Any]:
    attrs = dict(spec.attributes)
    if decode.is_missing(raw):
        return attrs
    go_type = _GO_TYPE_NAMES[spec.type]
    if not isinstance(raw, dict):
        raise decode.type_error(raw, "value", f"toxics.{go_type}")
    for attr, kind, _ in spec.kind.attributes:
        value = decode.field(raw, attr)
        if decode.is_missing(value):
            continue
        where = f"{go_type}.{attr}"
        attrs[attr] = (
            decode.as_int64(value, where) if kind == "int" else decode.as_string(value, where)
        )
    if spec.type == "half_open" and attrs["side"] not in ("client", "upstream"):
        raise BAD_REQUEST_BODY.joined("side must be client or upstream")
    return attrs
