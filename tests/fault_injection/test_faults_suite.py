"""The graders of conformance/suite/test_under_faults.py, on hand-made wire traffic.

A raw WebSocket client plays a worker against the fake engine, replaying correctly or with one
seeded mistake, so each grader is shown to pass the right thing and name the wrong one. No SDK
is started: these run in a second.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from websockets.asyncio.client import ClientConnection, connect

import conformance.suite.test_under_faults as uf
from conformance.verdict import VerdictRecorder
from fake_engine import FakeEngine
from fault_injection.schedule import Fault, parse

NAME = "graded-worker"
STALE = {"worker_id": "00000000-0000-4000-8000-000000000000", "reattach_token": "stale"}


def registrations(*, duplicate: str | None = None) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = [{"type": "registerfunction", "id": f} for f in uf.FNS]
    if duplicate:
        frames.append({"type": "registerfunction", "id": duplicate})
    frames.append(
        {
            "type": "registertrigger",
            "id": "7d3f0c1e-0000-4000-8000-000000000001",
            "trigger_type": "http",
            "function_id": uf.FNS[0],
            "config": uf.TRIGGER,
        }
    )
    frames.append(
        {
            "type": "invokefunction",
            "function_id": uf.META_FN,
            "data": {"name": NAME, "runtime": "python", "os": "test"},
            "action": {"type": "void"},
        }
    )
    return frames


async def open_worker(
    engine: FakeEngine, frames: list[dict[str, Any]]
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect, read workerregistered, send ``frames``; wait until the engine has them all."""
    ws = await connect(engine.url, ping_interval=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
    before = len(engine.transcript.frames(direction="in"))
    for f in frames:
        await ws.send(json.dumps(f))
    await engine.wait_until(
        lambda: len(engine.transcript.frames(direction="in")) >= before + len(frames),
        5,
        "the frames",
    )
    return ws, hello


def reattach(hello: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "reattach",
        "previous_worker_id": hello["worker_id"],
        "reattach_token": hello["reattach_token"],
    }


async def reconnect(engine: FakeEngine, frames: list[dict[str, Any]]) -> list[str]:
    """A first connection, dropped; a second one sending ``frames(hello of the first)``."""
    ws1, hello = await open_worker(engine, registrations())
    first = engine.connections[max(engine.connections)]
    await ws1.close()
    await engine.wait_until(lambda: not first.alive, 5, "the first connection gone")
    ws2, _ = await open_worker(engine, frames(hello) if callable(frames) else frames)
    second = engine.connections[max(engine.connections)]
    names = {uf.identity(c): c.id for c in engine.connections.values()}
    bad = uf.replay_violations(engine, second.id, [uf.identity(first)], names)
    bad += uf.ownership_violations(engine, second.id)
    await ws2.close()
    return bad


async def test_a_correct_replay_passes():
    async with FakeEngine() as engine:
        bad = await reconnect(engine, lambda hello: [reattach(hello), *registrations()])
    assert bad == []


async def test_a_missing_reattach_is_named():
    async with FakeEngine() as engine:
        bad = await reconnect(engine, lambda hello: registrations())
    assert any("first frame was registerfunction(uf::echo), not reattach" in b for b in bad), bad


async def test_a_stale_identity_is_named():
    async with FakeEngine() as engine:
        bad = await reconnect(engine, lambda hello: [reattach(STALE), *registrations()])
    assert any("reattach named an identity never sent" in b for b in bad), bad


async def test_a_duplicated_registration_is_counted():
    async with FakeEngine() as engine:
        bad = await reconnect(
            engine, lambda hello: [reattach(hello), *registrations(duplicate=uf.FNS[1])]
        )
    assert bad == [f"connection #2: fn {uf.FNS[1]} sent 2 times"], bad


async def test_settled_needs_one_live_connection_owning_everything():
    async with FakeEngine() as engine:
        ws1, _ = await open_worker(engine, registrations())
        assert uf.settled_on(engine, NAME) is not None
        # A second live connection of the same worker (what a half-open one looks like).
        ws2, _ = await open_worker(engine, [])
        assert uf.settled_on(engine, NAME) is None
        await ws2.close()
        await engine.wait_until(lambda: len(engine.live_connections()) == 1, 5, "one left")
        assert uf.settled_on(engine, NAME) is not None
        await ws1.close()


async def test_not_converged_is_failed_unless_the_stale_lease_hazard():
    async with FakeEngine() as engine:
        verdict = VerdictRecorder()
        with pytest.raises(AssertionError, match="is not settled"):
            uf.grade_not_converged(engine, verdict)
        ws1, _ = await open_worker(engine, registrations())
        # The first connection stays open (half-open, as far as the engine knows): a
        # reconnection that does not reattach is rejected (its worker name is taken).
        ws2, _ = await open_worker(engine, registrations())
        await engine.wait_until(lambda: uf.rejected_connections(engine) == [2], 5, "rejection")
        with pytest.raises(AssertionError, match=r"connection\(s\) \[2\].*did not start"):
            uf.grade_not_converged(engine, verdict)
        ws3, _ = await open_worker(engine, [reattach(STALE), *registrations()])
        await engine.wait_until(lambda: uf.rejected_connections(engine) == [2, 3], 5, "two")
        with pytest.raises(AssertionError, match=r"connection\(s\) \[2\]"):
            uf.grade_not_converged(engine, verdict)  # the one without reattach still counts
        for ws in (ws3, ws2, ws1):
            await ws.close()


async def test_the_hazard_alone_is_informational():
    async with FakeEngine() as engine:
        verdict = VerdictRecorder()
        ws1, _ = await open_worker(engine, registrations())
        # The SDK never learnt the live connection's identity: it reattaches to an older one.
        ws2, _ = await open_worker(engine, [reattach(STALE), *registrations()])
        await engine.wait_until(lambda: uf.rejected_connections(engine) == [2], 5, "rejection")
        uf.grade_not_converged(engine, verdict)
        assert verdict.grade == "INFORMATIONAL" and "§8.2" in verdict.message
        await ws2.close()
        await ws1.close()


@settings(max_examples=60, deadline=None, database=None)
@given(uf.chaos_schedules())
def test_chaos_schedules_always_cut_something(schedule):
    assert any(f.kind in uf.DISRUPTIVE for f in schedule.faults)
    assert parse(str(schedule)) == schedule


def test_chaos_schedules_leave_out_half_open_for_real_toxiproxy(monkeypatch):
    monkeypatch.setattr(uf, "REAL_TOXIPROXY", True)
    seen: list[str] = []

    @settings(max_examples=80, deadline=None, database=None)
    @given(uf.chaos_schedules())
    def run(schedule):
        seen.extend(f.kind for f in schedule.faults)

    run()
    assert "half_open" not in seen and seen


def test_a_cut_records_a_replayable_schedule():
    run = uf.ReplayCut(first=None, target=None, after=2, t0_ns=0)  # type: ignore[arg-type]
    run.applied = [
        uf.THROTTLE,
        Fault.make(1, "disconnect", mode="abort"),
        Fault.make(230, "half_open", side="client", delay=600),
        Fault.make(233, "clear"),
    ]
    assert parse(str(run.schedule)) == run.schedule
    assert [f.kind for f in run.schedule.faults] == ["slicer", "disconnect", "half_open", "clear"]
