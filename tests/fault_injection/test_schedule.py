"""Fault schedules: the text form replays exactly; schedules act on a real engine and proxy."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import given, settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fake_engine import FakeEngine
from fault_injection.apply import FaultTarget, run_schedule
from fault_injection.schedule import Fault, Schedule, ScheduleError, parse
from fault_injection.strategies import schedules
from fault_injection.toxiproxy_client import toxiproxy_server


@settings(max_examples=200, deadline=None)
@given(schedules(max_faults=5))
def test_text_form_round_trips(schedule):
    assert parse(schedule.text()) == schedule
    assert parse(str(schedule)) == schedule


def test_parse_errors_are_clear():
    with pytest.raises(ScheduleError, match="unknown fault kind 'lag'"):
        parse("@10ms lag ms=3")
    with pytest.raises(ScheduleError, match="expected '@<ms>ms <kind> k=v"):
        parse("latency at 10")
    with pytest.raises(ScheduleError, match="latency takes"):
        parse("@0ms latency speed=3")


def test_schedule_orders_faults_and_reports_duration():
    s = parse("@300ms down for_ms=200\n@0ms latency latency=5")
    assert [f.kind for f in s.faults] == ["latency", "down"]
    assert s.duration_ms == 500 and s.needs_proxy


async def _ping_rtt(ws) -> float:
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "ping"}))
    while json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] != "pong":
        pass
    return (time.perf_counter() - t0) * 1000


async def test_protocol_faults_act_on_the_engine():
    async with FakeEngine() as engine, connect(engine.url, ping_interval=None) as ws:
        await ws.recv()
        target = FaultTarget(engine)
        await run_schedule(parse("@0ms drop type=pong times=1"), target)
        await ws.send(json.dumps({"type": "ping"}))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        assert await _ping_rtt(ws) < 1000  # only one pong was dropped
        await run_schedule(
            parse("@0ms refuse status=503 times=1\n@10ms disconnect mode=close"), target
        )
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert [a["fault"] for a in target.applied][-2:] == [
            "@0ms refuse status=503 times=1",
            "@10ms disconnect mode=close",
        ]
    notes = [e.detail["fault"] for e in engine.transcript.notes("fault")]
    assert len(notes) == 3


async def test_network_faults_act_through_the_proxy():
    async with FakeEngine() as engine, toxiproxy_server() as tp:
        proxy = await tp.call(
            "create", upstream=f"127.0.0.1:{engine.port}", name="eng", listen="127.0.0.1:0"
        )
        host, port = proxy.listen_host_port
        async with connect(f"ws://{host}:{port}", ping_interval=None) as ws:
            await ws.recv()
            base = await _ping_rtt(ws)
            target = FaultTarget(engine, proxy=proxy, embedded=tp.embedded)
            await run_schedule(Schedule((Fault.make(0, "latency", latency=100),)), target)
            slow = await _ping_rtt(ws)
            # One downstream latency toxic of 100 ms: toxiproxy's own tests allow +-10 ms.
            assert 90 <= slow - base <= 160, (base, slow)
            await run_schedule(parse("@0ms clear\n@20ms reset_peer timeout=0"), target)
            with pytest.raises((ConnectionClosed, asyncio.TimeoutError, OSError)):
                for _ in range(3):
                    await _ping_rtt(ws)
            await engine.transcript.wait_for(
                lambda e: e.kind == "disconnect", 5, "the engine to see the reset connection end"
            )


async def test_network_schedule_without_proxy_is_refused():
    async with FakeEngine() as engine:
        with pytest.raises(ScheduleError, match="no proxy"):
            await run_schedule(parse("@0ms latency latency=5"), FaultTarget(engine))


async def test_toxic_names_unique_and_same_time_faults_keep_written_order():
    async with FakeEngine() as engine, toxiproxy_server() as tp:
        proxy = await tp.call(
            "create", upstream=f"127.0.0.1:{engine.port}", name="order", listen="127.0.0.1:0"
        )
        target = FaultTarget(engine, proxy=proxy, embedded=tp.embedded)
        await run_schedule(parse("@0ms latency latency=10 stream=upstream"), target)
        await run_schedule(parse("@0ms latency latency=10 stream=downstream"), target)
        assert len(await asyncio.to_thread(proxy.toxics)) == 2
        await run_schedule(parse("@20ms latency latency=10\n@20ms clear"), target)
        assert await asyncio.to_thread(proxy.toxics) == {}


async def test_close_mid_replay_cuts_the_next_worker_connection_after_frame_k():
    async with FakeEngine() as engine:
        await run_schedule(parse("@0ms close_mid_replay after=2"), FaultTarget(engine))
        # A dial that never upgrades must not use the fault up.
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.close()
        async with connect(engine.url, ping_interval=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 2))["type"] == "pong"
            await ws.send(json.dumps({"type": "ping"}))  # frame 2: handled, then the cut
            assert json.loads(await asyncio.wait_for(ws.recv(), 2))["type"] == "pong"
            await asyncio.wait_for(ws.wait_closed(), 5)
