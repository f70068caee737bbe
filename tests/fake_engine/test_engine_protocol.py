"""The fake engine against a hand-driven worker: registry, routing, cleanup, reattach, faults."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from fake_engine import FakeEngine, FrameRule, WaitTimeout
from fake_engine import handshake as hs
from fake_engine.engine import EngineStartError


async def test_workerregistered_sent_on_accept_with_uuids(engine, raw_worker):
    w = await raw_worker()
    await engine.transcript.wait_frame("workerregistered", direction="out")
    await asyncio.sleep(0.05)
    assert w.registered is not None
    uuid.UUID(w.registered["worker_id"])
    uuid.UUID(w.registered["reattach_token"])
    assert "features" not in w.registered  # engine 0.23 sends none


async def test_invoke_routes_to_owner_and_back(engine, raw_worker):
    w = await raw_worker()
    await w.register("w1", "a::echo")
    await engine.wait_worker("w1", functions=("a::echo",))
    out = await engine.invoke("a::echo", {"x": [1, 2]})
    assert out.ok and out.result == {"x": [1, 2]}
    sent = engine.transcript.frames(direction="out", type="invokefunction")[-1].message
    assert sent["invocation_id"] == out.invocation_id


async def test_worker_to_worker_call_and_function_not_found_shape(engine, raw_worker):
    a, b = await raw_worker(), await raw_worker()
    await a.register("a", "a::echo")
    await b.register("b")
    await engine.wait_worker("a", functions=("a::echo",))
    inv = str(uuid.uuid4())
    await b.send(type="invokefunction", function_id="a::echo", data={"v": 1}, invocation_id=inv)
    res = await b.next("invocationresult")
    assert res["invocation_id"] == inv
    # The engine adds the caller's worker id to object payloads (engine/src/engine/mod.rs l.774).
    assert (
        res["result"]["v"] == 1 and res["result"]["_caller_worker_id"] == b.registered["worker_id"]
    )
    await b.send(type="invokefunction", function_id="nope::x", data={}, invocation_id=inv)
    res = await b.next("invocationresult")
    assert res["error"] == {
        "code": "function_not_found",
        "message": "Function nope::x not found in namespace default.",
    }


async def test_void_call_gets_no_reply(engine, raw_worker):
    a, b = await raw_worker(), await raw_worker()
    await a.register("a", "a::echo")
    await b.register("b")
    await engine.wait_worker("a", functions=("a::echo",))
    since = len(engine.transcript)
    await b.send(type="invokefunction", function_id="a::echo", data={}, action={"type": "void"})
    await engine.transcript.wait_frame("invocationresult", since=since)
    await asyncio.sleep(0.1)
    assert b.inbox.empty()
    # The target still gets an invocation id (the engine generates one).
    fwd = engine.transcript.frames(direction="out", type="invokefunction", since=since)[0]
    uuid.UUID(fwd.message["invocation_id"])


async def test_undecodable_frames_recorded_and_connection_kept(engine, raw_worker):
    w = await raw_worker()
    for bad in [
        "not json",
        "{}",
        '{"type":"bogus"}',
        '{"type":"registerfunction"}',
        "[1,2]",
        '{"type":"unregistertriggertype","id":"x"}',
        "   ",
    ]:
        await w.ws.send(bad)
    await w.register("w", "w::echo")
    await engine.wait_worker("w", functions=("w::echo",))
    errors = [e for e in engine.transcript.frames(direction="in") if e.error]
    assert len(errors) == 6
    assert any("unknown variant `unregistertriggertype`" in e.error for e in errors)
    assert (await engine.invoke("w::echo", 5)).result == 5


async def test_conflicting_registration_rejected(engine, raw_worker):
    a, b = await raw_worker(), await raw_worker()
    await a.register("a", "x::echo")
    await engine.wait_worker("a", functions=("x::echo",))
    await b.register("b", "x::echo")
    rej = await b.next("registrationrejected")
    assert rej["code"] == "FUNCTION_NAMESPACE_CONFLICT"
    assert rej["function_id"] == "x::echo"
    assert rej["owner_worker_id"] == a.registered["worker_id"]


async def test_worker_name_conflict_rejects_and_closes(engine, raw_worker):
    a, b = await raw_worker(), await raw_worker()
    await a.register("same")
    await engine.wait_worker("same")
    await b.register("same")
    rej = await b.next("registrationrejected")
    assert rej["code"] == "WORKER_NAMESPACE_CONFLICT" and rej["worker_name"] == "same"
    await asyncio.wait_for(b.ws.wait_closed(), 5)


async def test_disconnect_cleans_up_and_stops_inflight_invocations(engine, raw_worker):
    a, b = await raw_worker(), await raw_worker()
    a.answer = False
    await a.register("a", "a::slow")
    await b.register("b")
    await engine.wait_worker("a", functions=("a::slow",))
    inv = str(uuid.uuid4())
    await b.send(type="invokefunction", function_id="a::slow", data={}, invocation_id=inv)
    await a.next("invokefunction")
    script_call = asyncio.create_task(engine.invoke("a::slow", {}, timeout=5))
    await a.next("invokefunction")
    engine.drop(engine.worker("a"), "abort")
    res = await b.next("invocationresult")
    assert res["invocation_id"] == inv
    assert res["error"] == {"code": "invocation_stopped", "message": "Invocation stopped"}
    assert (await script_call).error["code"] == "invocation_stopped"
    listing = await engine.invoke("engine::functions::list", {})
    assert listing.result == {"functions": []}


async def test_reattach_with_valid_token_evicts_old_connection(engine, raw_worker):
    old = await raw_worker()
    await old.register("r", "r::echo")
    await engine.wait_worker("r", functions=("r::echo",))
    old_conn = engine.worker("r")
    new = await raw_worker()
    await new.send(
        type="reattach",
        previous_worker_id=old.registered["worker_id"],
        reattach_token=old.registered["reattach_token"],
    )
    await engine.transcript.wait_for(
        lambda e: e.kind == "note" and e.detail.get("what") == "reattach_accepted", 5, "reattach"
    )
    assert not old_conn.alive
    await new.register("r", "r::echo")  # lands on a clean slate: no conflict
    conn = await engine.wait_worker("r", functions=("r::echo",))
    assert conn.id != old_conn.id


async def test_reattach_with_wrong_token_or_after_restart_is_ignored(engine, raw_worker):
    old = await raw_worker()
    await old.register("r")
    await engine.wait_worker("r")
    new = await raw_worker()
    await new.send(
        type="reattach",
        previous_worker_id=old.registered["worker_id"],
        reattach_token=str(uuid.uuid4()),
    )
    ev = await engine.transcript.wait_for(
        lambda e: e.kind == "note" and e.detail.get("what") == "reattach_ignored", 5, "ignored"
    )
    assert ev.detail["reason"] == "token mismatch"
    assert engine.worker("r").alive
    await engine.restart()
    third = await raw_worker()
    await third.send(
        type="reattach",
        previous_worker_id=old.registered["worker_id"],
        reattach_token=old.registered["reattach_token"],
    )
    ev = await engine.transcript.wait_for(
        lambda e: (
            e.kind == "note"
            and e.detail.get("what") == "reattach_ignored"
            and e.conn == engine.transcript.connections()[-1]
        ),
        5,
        "ignored after restart",
    )
    assert ev.detail["reason"] == "unknown worker id"


async def test_protocol_ping_answered_with_pong(engine, raw_worker):
    w = await raw_worker()
    await w.send(type="ping")
    assert await w.next("pong")


async def test_websocket_pings_answered_unless_told_not_to(engine, raw_worker):
    w = await raw_worker()
    await engine.transcript.wait_frame("workerregistered", direction="out")
    await asyncio.wait_for(await w.ws.ping(), 2)
    engine.set_answer_pings(False)
    waiter = await w.ws.ping()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(waiter, 0.5)
    pings = [e for e in engine.transcript.frames(direction="in") if e.opcode == "ping"]
    assert [p.detail["answered"] for p in pings] == [True, False]


async def test_handshake_modes(engine):
    engine.set_handshake(hs.Refuse(503), times=1)
    with pytest.raises(InvalidStatus) as exc:
        await connect(engine.url, open_timeout=3)
    assert exc.value.response.status_code == 503
    engine.set_handshake(hs.CloseBeforeUpgrade(), times=1)
    with pytest.raises((InvalidMessage, ConnectionClosed, OSError)):
        await connect(engine.url, open_timeout=3)
    engine.set_handshake(hs.Stall(limit_s=5), times=1)
    with pytest.raises(TimeoutError):
        await connect(engine.url, open_timeout=0.5)
    engine.set_handshake(hs.CloseAfterOpen(1001, "go away"), times=1)
    ws = await connect(engine.url, open_timeout=3)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd.code == 1001
    engine.set_handshake(hs.AbortAfterOpen(), times=1)
    ws = await connect(engine.url, open_timeout=3)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd is None
    await engine.stop_listening()
    with pytest.raises(OSError):
        await connect(engine.url, open_timeout=3)
    await engine.start_listening()
    ws = await connect(engine.url, open_timeout=3)
    assert json.loads(await ws.recv())["type"] == "workerregistered"
    await ws.close()
    results = [
        e.detail["result"] for e in engine.transcript.select(lambda e: e.kind == "handshake")
    ]
    assert results[:5] == ["refused", "closed_before_upgrade", "stalled", "accepted", "accepted"]
    assert len(engine.transcript.dial_times()) == 6


async def test_frame_rules_drop_duplicate_and_reorder(engine, raw_worker):
    w = await raw_worker()
    await w.register("f")
    await engine.wait_worker("f")
    engine.add_frame_rule(FrameRule("drop", type="pong", times=1))
    await w.send(type="ping")
    await w.send(type="ping")
    assert await w.next("pong")
    await asyncio.sleep(0.1)
    assert w.inbox.empty()  # exactly one of the two pongs arrived
    engine.add_frame_rule(FrameRule("duplicate", type="pong", times=1))
    await w.send(type="ping")
    await w.next("pong")
    await w.next("pong")
    engine.add_frame_rule(FrameRule("hold", type="pong", times=1))
    await w.send(type="ping")
    inv = str(uuid.uuid4())
    await w.send(type="invokefunction", function_id="missing", data={}, invocation_id=inv)
    first = await w.inbox.get()
    second = await w.inbox.get()
    assert (first["type"], second["type"]) == ("invocationresult", "pong")


async def test_intercepts_answer_late_or_never(engine, raw_worker):
    w = await raw_worker()
    engine.intercept("ext::value", result={"ok": 1}, delay_s=0.2)
    engine.intercept("ext::never", never=True)
    await w.send(type="invokefunction", function_id="ext::value", data={}, invocation_id="a" * 8)
    await w.send(type="invokefunction", function_id="ext::never", data={}, invocation_id="b" * 8)
    res = await w.next("invocationresult")
    assert res["invocation_id"] == "a" * 8 and res["result"] == {"ok": 1}
    await asyncio.sleep(0.2)
    assert w.inbox.empty()
    assert len(engine.intercepts["ext::never"].calls) == 1


async def test_trigger_type_provider_receives_bindings(engine, raw_worker):
    provider, user = await raw_worker(), await raw_worker()
    await user.register("user", "u::echo")
    await user.send(
        type="registertrigger",
        id="t1",
        trigger_type="custom",
        function_id="u::echo",
        config={"k": 1},
    )
    await engine.wait_worker("user", functions=("u::echo",))
    assert engine.registry.triggers["t1"].status == "parked"
    await provider.send(type="registertriggertype", id="custom", description="d")
    await provider.register("provider")
    fwd = await provider.next("registertrigger")
    assert fwd == {
        "type": "registertrigger",
        "id": "t1",
        "trigger_type": "custom",
        "function_id": "u::echo",
        "config": {"k": 1},
    }
    engine.drop(engine.worker("user"), "close")
    removed = await provider.next("unregistertrigger")
    assert removed == {"type": "unregistertrigger", "id": "t1", "trigger_type": "custom"}
    listed = await engine.invoke("engine::registered-triggers::list", {})
    assert listed.result == {"triggers": []}


async def test_registrations_buffered_until_namespace_known(engine, raw_worker):
    w = await raw_worker()
    await w.send(type="registerfunction", id="b::echo")
    await asyncio.sleep(0.1)
    assert "b::echo" not in engine.function_ids()
    await w.send(
        type="invokefunction",
        function_id="engine::workers::register",
        data={"name": "b", "pid": 2},
        action={"type": "void"},
    )
    await engine.wait_worker("b", functions=("b::echo",))


async def test_telemetry_endpoint_counts_binary_frames(engine):
    ws = await connect(engine.url + "/otel", open_timeout=3)
    await ws.send(b"OTLP{}")
    await ws.send(b"MTRC{}")
    await ws.send(b"LOGS{}")
    await ws.send(b"LOGS{}")
    await asyncio.sleep(0.1)
    await ws.close()
    assert engine.telemetry_frames == {"OTLP": 1, "MTRC": 1, "LOGS": 2}


async def test_wait_for_names_what_it_waited_for(engine):
    with pytest.raises(WaitTimeout, match="a `registerfunction` frame in"):
        await engine.transcript.wait_frame("registerfunction", timeout=0.1)


async def test_port_in_use_is_a_clear_error(engine):
    with pytest.raises(EngineStartError, match="address already in use"):
        async with FakeEngine(port=engine.port):
            pass


async def test_transcript_exports_json_lines(engine, raw_worker, tmp_path):
    w = await raw_worker()
    await w.register("j", "j::echo")
    await engine.wait_worker("j", functions=("j::echo",))
    path = tmp_path / "t.jsonl"
    engine.transcript.write_jsonl(str(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = {line["kind"] for line in lines}
    assert {"tcp_accept", "http_request", "handshake", "frame", "note"} <= kinds
    assert all(isinstance(line["t_ns"], int) for line in lines)
    assert engine.transcript.connections_of("j") == [engine.worker("j").id]
