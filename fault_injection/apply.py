"""Carry out a fault schedule against a fake engine and (for network faults) a toxiproxy proxy.

Each fault fires at its offset from the start; toxics with ``for_ms`` are removed after that long.
Every applied fault is logged with its CLOCK_MONOTONIC time, so evidence lines it up with frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fake_engine import FakeEngine, FrameRule
from fake_engine import handshake as hs
from fake_engine.engine import Connection

from .schedule import NETWORK, Fault, Schedule, ScheduleError

TOXICS = {
    "latency",
    "bandwidth",
    "slicer",
    "slow_close",
    "timeout",
    "reset_peer",
    "limit_data",
    "half_open",
}


@dataclass
class FaultTarget:
    """What a schedule acts on. ``conn`` picks the worker connection protocol faults aim at."""

    engine: FakeEngine
    proxy: Any = None  # fault_injection.toxiproxy_client.Proxy
    embedded: bool = True
    conn: Callable[[], Connection | None] | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)

    def connection(self) -> Connection | None:
        if self.conn is not None:
            return self.conn()
        live = self.engine.live_connections()
        return live[-1] if live else None


async def run_schedule(schedule: Schedule, target: FaultTarget) -> list[dict[str, Any]]:
    """Apply every fault at its time; returns the log of what was applied when."""
    if schedule.needs_proxy and target.proxy is None:
        raise ScheduleError(f"schedule has network faults but no proxy: {schedule}")
    if not target.embedded and any(f.kind == "half_open" for f in schedule.faults):
        raise ScheduleError("half_open is an iii-conformance toxic: it needs the embedded server")
    loop = asyncio.get_running_loop()
    start = loop.time()
    # Faults start in schedule order, one after another (two at the same offset keep their
    # order); what lasts (`for_ms`, `down`) ends in a background task.
    endings: list[asyncio.Task[None]] = []
    try:
        for fault in schedule.faults:
            delay = start + fault.at_ms / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ending = await _apply(fault, target)
            if ending is not None:
                endings.append(asyncio.ensure_future(ending))
        await asyncio.gather(*endings)
    finally:
        for t in endings:
            t.cancel()
    return target.applied


Ending = Coroutine[Any, Any, None]
_names = itertools.count(1)


async def _apply(fault: Fault, target: FaultTarget) -> Ending | None:
    p = fault.params
    target.applied.append({"t_ns": time.monotonic_ns(), "fault": fault.text()})
    target.engine.transcript.note(0, "fault", fault=fault.text())
    if fault.kind in NETWORK:
        return await _network(fault, p, target)
    return await _protocol(fault, p, target)


async def _network(fault: Fault, p: dict[str, Any], target: FaultTarget) -> Ending | None:
    proxy = target.proxy
    if fault.kind == "clear":
        for name in list(await asyncio.to_thread(proxy.toxics)):
            await asyncio.to_thread(proxy.destroy_toxic, name)
        return None
    if fault.kind == "down":
        await asyncio.to_thread(proxy.disable)
        return _after(p["for_ms"], proxy.enable)
    attrs = {k: v for k, v in p.items() if k not in ("stream", "for_ms")}
    # Names unique across schedules, so two runs against one proxy never collide.
    body: dict[str, Any] = {
        "type": fault.kind,
        "name": f"{fault.kind}_{next(_names)}",
        "attributes": attrs,
    }
    if "stream" in p:
        body["stream"] = p["stream"]
    await asyncio.to_thread(lambda: proxy.add_toxic(**body))
    if p.get("for_ms"):
        return _after(p["for_ms"], proxy.destroy_toxic, body["name"])
    return None


async def _after(ms: int | None, undo: Callable[..., Any], *args: Any) -> None:
    await asyncio.sleep((ms or 0) / 1000)
    with contextlib.suppress(Exception):  # undone already (e.g. a later `clear`)
        await asyncio.to_thread(undo, *args)


async def _protocol(fault: Fault, p: dict[str, Any], target: FaultTarget) -> Ending | None:
    engine = target.engine
    kind = fault.kind
    if kind in ("drop", "delay", "duplicate", "reorder"):
        engine.add_frame_rule(
            FrameRule(
                action="hold" if kind == "reorder" else kind,
                direction=p.get("direction", "out"),
                type=p["type"],
                after=p["after"],
                times=p["times"],
                delay_s=p.get("ms", 0) / 1000,
            )
        )
    elif kind == "close_mid_replay":
        # The next connection is cut after its `after`-th inbound frame: inside the replay.
        engine.add_frame_rule(
            FrameRule(
                action=p["mode"] if p["mode"] in ("close", "abort") else "abort",
                direction="in",
                after=p["after"] - 1,
                next_worker=True,
            )
        )
    elif kind == "refuse":
        engine.set_handshake(hs.Refuse(p["status"]), times=p["times"])
    elif kind == "deaf_pings":
        engine.set_answer_pings(False)
        if p.get("for_ms"):
            return _after_sync(p["for_ms"], engine.set_answer_pings, True)
    elif kind == "restart":
        await engine.restart(down_s=p["down_ms"] / 1000)
    else:
        conn = target.connection()
        if conn is None or not conn.alive:
            target.applied.append(
                {
                    "t_ns": time.monotonic_ns(),
                    "skipped": fault.text(),
                    "why": "no live worker connection",
                }
            )
            return
        if kind == "malformed":
            engine.send_raw(conn, str(p["payload"]))
        elif kind == "disconnect":
            engine.drop(conn, p["mode"], p["code"])
        else:  # pragma: no cover - the vocabulary and this function are kept in step
            raise ScheduleError(f"no handler for fault kind {kind!r}")


async def _after_sync(ms: int, undo: Callable[..., Any], *args: Any) -> None:
    await asyncio.sleep(ms / 1000)
    undo(*args)
