"""The published Python 0.25.0 and Node 0.22.1 SDK workers against the fake engine.

Everything here is read back from the engine's transcript: what the real SDKs sent, when.
"""

from __future__ import annotations

import asyncio

import pytest

from conformance.sdk import install

FAST = {
    "initial_delay_ms": 100,
    "max_delay_ms": 1000,
    "backoff_multiplier": 2,
    "jitter_factor": 0.3,
}


async def _connected(engine, worker, *functions):
    return await engine.wait_worker(worker.worker_name, timeout=30, functions=functions)


async def test_first_frames(fake_engine, sdk_worker_factory, iii_sdk):
    w = await sdk_worker_factory(reconnection=FAST)
    await w.register_function("ff::echo")
    conn = await _connected(fake_engine, w, "ff::echo")
    frames = fake_engine.transcript.messages(conn=conn.id)
    types = [m["type"] for m in frames]
    meta = next(m for m in frames if m.get("function_id") == "engine::workers::register")
    # The metadata call is a void invoke with no invocation id, and names the SDK.
    assert meta["action"] == {"type": "void"} and "invocation_id" not in meta
    assert meta["data"]["runtime"] == iii_sdk.spec.language
    assert meta["data"]["version"] == iii_sdk.sdk_version
    assert meta["data"]["name"] == w.worker_name
    assert {"os", "pid"} <= set(meta["data"])
    assert "reattach" not in types  # never on a first connection
    assert types.count("registerfunction") == 1
    # One metadata call per connection, wherever it falls (it races the registrations).
    assert sum(m.get("function_id") == "engine::workers::register" for m in frames) == 1
    first_out = fake_engine.transcript.frames(conn=conn.id, direction="out")[0]
    assert first_out.type == "workerregistered"


async def test_engine_invokes_worker_and_gets_result(fake_engine, sdk_worker_factory):
    w = await sdk_worker_factory(reconnection=FAST)
    await w.register_function("inv::echo", "echo")
    await w.register_function("inv::boom", {"kind": "fail", "message": "boom"})
    await _connected(fake_engine, w, "inv::echo", "inv::boom")
    out = await fake_engine.invoke("inv::echo", {"hello": "world", "n": [1, 2]})
    assert out.ok and out.result == {"hello": "world", "n": [1, 2]}
    failed = await fake_engine.invoke("inv::boom", {})
    assert failed.error["code"] == "invocation_failed" and "boom" in failed.error["message"]
    ran = w.invocations("inv::echo")
    assert ran and ran[-1]["invocation_id"] in (None, out.invocation_id)


async def test_trigger_across_sdks_through_the_engine(fake_engine):
    from conformance.drivers.client import start_driver

    py, node = install("python@0.25.0"), install("node@0.22.1")
    async with start_driver(py) as a, start_driver(node) as b:
        await asyncio.gather(
            a.connect(fake_engine.url, name="x-py", reconnection=FAST),
            b.connect(fake_engine.url, name="x-node", reconnection=FAST),
        )
        await a.register_function("py::echo")
        await b.register_function("node::echo")
        await fake_engine.wait_worker("x-py", functions=("py::echo",), timeout=30)
        await fake_engine.wait_worker("x-node", functions=("node::echo",), timeout=30)
        from_py = await a.trigger("node::echo", {"from": "python"}, timeout_ms=5000)
        from_node = await b.trigger("py::echo", {"from": "node"}, timeout_ms=5000)
        assert from_py.ok and from_py.result["from"] == "python"
        assert from_node.ok and from_node.result["from"] == "node"
        routed = fake_engine.transcript.frames(direction="out", type="invokefunction")
        assert {e.message["function_id"] for e in routed} >= {"node::echo", "py::echo"}


@pytest.mark.parametrize(
    "mode,code", [("close", 1000), ("close", 1001), ("abort", None), ("reset", None)]
)
async def test_reconnect_after_drop_sends_reattach(fake_engine, sdk_worker_factory, mode, code):
    w = await sdk_worker_factory(reconnection=FAST)
    await w.register_function("rc::echo")
    first = await _connected(fake_engine, w, "rc::echo")
    # The SDK stores the identity once it has read workerregistered; give it a moment to.
    await asyncio.sleep(0.3)
    fake_engine.drop(first, mode, code or 1000, "conformance drop")
    second = await fake_engine.wait_until(
        lambda: (
            (c := fake_engine.worker(w.worker_name))
            and c.id != first.id
            and "rc::echo" in {f.id for f in fake_engine.registry.functions_of(c.id)}
            and c
        ),
        20,
        "the worker to reconnect and re-register",
    )
    msgs = fake_engine.transcript.messages(conn=second.id)
    assert msgs[0] == {
        "type": "reattach",
        "previous_worker_id": first.worker_id,
        "reattach_token": first.reattach_token,
    }
    assert [m["type"] for m in msgs].count("registerfunction") == 1
    assert (await fake_engine.invoke("rc::echo", {"after": mode})).result == {"after": mode}


async def test_cleanup_and_invocation_stopped(fake_engine, sdk_worker_factory):
    caller = await sdk_worker_factory(reconnection=FAST)
    target = await sdk_worker_factory(reconnection={**FAST, "max_retries": 0})
    await target.register_function("gone::slow", {"kind": "sleep", "ms": 5000})
    await target.register_function("gone::echo")
    tconn = await _connected(fake_engine, target, "gone::slow", "gone::echo")
    await _connected(fake_engine, caller)
    listed = await fake_engine.invoke("engine::functions::list", {})
    assert {f["function_id"] for f in listed.result["functions"]} == {"gone::slow", "gone::echo"}
    call = asyncio.create_task(caller.trigger("gone::slow", {}, timeout_ms=8000))
    await target.wait_event(lambda e: e.get("event") == "invoked", 10, what="the slow handler")
    fake_engine.drop(tconn, "abort")
    outcome = await call
    assert not outcome.ok and outcome.code == "invocation_stopped"
    assert outcome.elapsed_ms < 5000  # told at once, not after the caller's timeout
    listed = await fake_engine.invoke("engine::functions::list", {})
    assert listed.result == {"functions": []}
    gone = await caller.trigger("gone::echo", {}, timeout_ms=3000)
    assert gone.code == "function_not_found"
