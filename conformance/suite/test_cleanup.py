"""cleanup.*: what is left behind when a worker goes away, and what survives a reconnection.

Contract: seed-external-workers.md "Worker Lifecycle" ("On disconnect — clean or crash — the
Engine automatically removes all the Worker's registered Functions and Triggers. On reconnect,
the SDK re-registers everything automatically"), iii-protocol.md §8.1 (cleanup_worker halts
in-flight invocations with ``invocation_stopped``), §5.4 (``function_not_found``), §7.2 and
§11.19 (results of handlers in flight across a drop).

The engine half (lists emptied, ``invocation_stopped`` sent, ``function_not_found``) is the fake
engine's; what is graded is what the SDK makes of it: that its shutdown really disconnects, that
a caller surfaces the engine's error codes promptly, that nothing unregistered comes back, and
that no invocation runs twice across a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conformance.drivers.client import Driver
from conformance.profiles import examples
from conformance.scenario import Scenario, scenario
from conformance.verdict import check
from fake_engine import Connection, FakeEngine
from fake_engine.handshake import Refuse
from fake_engine.transcript import IN, WaitTimeout

LIFECYCLE = "seed-external-workers.md#Worker Lifecycle"
# Cleanup is not about backoff: short delays without jitter keep reconnections quick.
QUICK = {
    "initial_delay_ms": 50,
    "max_delay_ms": 400,
    "backoff_multiplier": 2.0,
    "jitter_factor": 0.0,
}
# Reconnection + replay took 46-95 ms and SDK shutdown 4-8 ms (loopback, both SDKs); the waits
# below only bound how long a broken SDK is waited for.
WAIT_S = 5.0
# An engine-reported error reached the calling SDK's trigger() 0.5-0.7 ms after the target's
# connection dropped (both SDKs, loopback, 20 runs). 500 ms allows for scheduling on a loaded
# 2-CPU CI runner and is still 10x below the caller's timeout and 4x below the handler's sleep,
# so an SDK that waits for its timeout (or the handler) cannot pass.
STOPPED_BOUND_MS = 500.0
CALL_TIMEOUT_MS = 5000
SLOW_MS = 2000
SETTLE_S = 0.1  # quiet time so late duplicates are counted


def lists(eng: FakeEngine) -> dict[str, Any]:
    """The engine's three lists, as ``engine::*::list`` return them (functions, instances,
    types), reduced to what identifies an entry."""
    fns = eng.registry.functions.values()
    out = {
        "functions": sorted(f.id for f in fns),
        "registered_triggers": sorted(
            (t.id, t.function_id, (t.config or {}).get("api_path"))
            for t in eng.registry.triggers.values()
        ),
        "trigger_types": sorted(
            t.id for t in eng.registry.trigger_types.values() if t.owner is not None
        ),
    }
    return out


async def builtin_lists(eng: FakeEngine) -> dict[str, Any]:
    """The same lists read through the engine's builtins, as a worker or console would."""
    fl = await eng.invoke("engine::functions::list", {})
    rt = await eng.invoke("engine::registered-triggers::list", {})
    tl = await eng.invoke("engine::triggers::list", {})
    return {
        "functions": sorted(f["function_id"] for f in fl.result["functions"]),
        "registered_triggers": sorted(
            (t["id"], t["function_id"], (t["config"] or {}).get("api_path"))
            for t in rt.result["triggers"]
        ),
        "trigger_types": sorted(
            t["id"] for t in tl.result["trigger_types"] if t.get("worker_id") is not None
        ),
    }


async def probe(eng: FakeEngine, conn: Connection) -> bool:
    """Invoke an unknown function on ``conn``; the SDK answers after every earlier frame."""
    inv = str(uuid.uuid4())
    since = len(eng.transcript.events)
    msg = {"type": "invokefunction", "invocation_id": inv, "function_id": "cl::probe", "data": {}}
    eng.send(conn, msg)
    with contextlib.suppress(WaitTimeout):
        await eng.transcript.wait_frame(
            "invocationresult",
            conn=conn.id,
            since=since,
            timeout=WAIT_S / 2,
            where=lambda m: m.get("invocation_id") == inv,
        )
        return True
    return False


def inbound(eng: FakeEngine, conn: Connection | int) -> list[dict[str, Any]]:
    cid = conn if isinstance(conn, int) else conn.id
    return eng.transcript.messages(conn=cid, direction=IN)


# --- cleanup.engine_lists -----------------------------------------------------------------------


@check(
    "cleanup.engine_lists",
    title="The engine's lists drop a departed worker's functions, triggers and trigger types, "
    "and show exactly its live set again after it reconnects",
    contract=f'{LIFECYCLE} ("On disconnect ... the Engine automatically removes all the '
    "Worker's registered Functions and Triggers. On reconnect, the SDK re-registers everything\")",
)
async def test_engine_lists(iii_sdk: Any, verdict: Any) -> None:
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        w = await s.worker(reconnection=QUICK, functions={"cl::a": "echo", "cl::b": "echo"})
        await w.register_trigger_type("cl-type", "cleanup type")
        await w.register_trigger("http", "cl::a", {"api_path": "/cl/a", "http_method": "POST"})
        conn = await s.connection(w, ("cl::a", "cl::b"))
        await eng.wait_until(
            lambda: eng.registry.triggers_of(conn.id), WAIT_S, "the trigger to register"
        )
        live = await builtin_lists(eng)
        verdict.evidence(registered=live)
        assert live["functions"] == ["cl::a", "cl::b"] and live["trigger_types"] == ["cl-type"]

        # Crash-like disconnect, no way back: everything of the worker must be gone.
        await eng.stop_listening()
        eng.drop(conn, "abort")
        await eng.wait_until(lambda: not conn.alive, WAIT_S, "the engine to clean up")
        gone = await builtin_lists(eng)
        verdict.evidence(after_disconnect=gone)
        empty = {"functions": [], "registered_triggers": [], "trigger_types": []}
        assert gone == empty, f"the engine still lists the departed worker's entries: {gone}"

        # Reconnection: exactly the live set again, the trigger under its old id.
        await eng.start_listening()
        back = await s.reconnected(w, conn, ("cl::a", "cl::b"))
        with contextlib.suppress(WaitTimeout):
            await eng.wait_until(
                lambda: eng.registry.triggers_of(back.id) and lists(eng) == live,
                WAIT_S,
                "the reconnected worker's lists to match",
            )
        await asyncio.sleep(SETTLE_S)
        again = await builtin_lists(eng)
        verdict.evidence(after_reconnect=again)
        assert again == live, (
            f"after reconnecting the engine lists {again}; before the drop the worker had {live}"
        )

        # The SDK's own shutdown must end the connection, so the engine can clean up.
        t0 = time.monotonic_ns()
        await w.shutdown()
        try:
            await eng.wait_until(lambda: not back.alive, WAIT_S, "the connection to close")
        except WaitTimeout:
            raise AssertionError(
                f"after shutdown() returned the worker's connection #{back.id} stayed open "
                f"for {WAIT_S}s; the engine keeps listing {lists(eng)}"
            ) from None
        verdict.evidence(shutdown_to_cleanup_ms=round((time.monotonic_ns() - t0) / 1e6, 1))
        final = await builtin_lists(eng)
        assert final == empty, f"after shutdown the engine still lists {final}"


# --- invocation_stopped / function_not_found -----------------------------------------------------

GONE_MODES = ("abort", "close1000", "shutdown", "reset")


async def caller_and_target(s: Scenario) -> tuple[Driver, Driver, Connection]:
    """Two workers of the SDK under test: a caller, and a target hosting the functions."""
    caller, target = await asyncio.gather(
        s.worker(reconnection=QUICK),
        s.worker(
            reconnection=QUICK,
            functions={
                "cl::slow": {"kind": "sleep", "ms": SLOW_MS},
                "cl::echo": "echo",
                "cl::gone": "echo",
            },
        ),
    )
    tconn = await s.connection(target, ("cl::slow", "cl::echo", "cl::gone"))
    await s.connection(caller)
    return caller, target, tconn


async def make_gone(eng: FakeEngine, target: Driver, tconn: Connection, mode: str) -> int:
    """The target leaves for good (no listener to come back to). Returns the monotonic ns."""
    await eng.stop_listening()
    t = time.monotonic_ns()
    if mode == "shutdown":
        asyncio.ensure_future(target.shutdown())
    elif mode.startswith("close"):
        eng.drop(tconn, "close", int(mode[5:]), "conformance cleanup")
    else:
        eng.drop(tconn, mode)
    return t


@check(
    "cleanup.invocation_stopped",
    title="A caller's trigger() fails promptly with invocation_stopped when the target worker "
    "disconnects mid-invocation",
    contract="iii-protocol.md#8.1 step 4 (a caller whose target vanished receives "
    "invocation_stopped); seed-external-workers.md#Worker Lifecycle",
)
@examples(gate=1, nightly=8)
@given(mode=st.sampled_from(GONE_MODES))
async def test_invocation_stopped(iii_sdk: Any, verdict: Any, mode: str) -> None:
    verdict.set_example({"target_leaves_by": mode})
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        caller, target, tconn = await caller_and_target(s)
        call = asyncio.create_task(
            caller.trigger("cl::slow", {"call": 1}, timeout_ms=CALL_TIMEOUT_MS)
        )
        await target.wait_event(
            lambda e: e.get("event") == "invoked", WAIT_S, what="the slow handler to start"
        )
        t_gone = await make_gone(eng, target, tconn, mode)
        out = await call
        after_ms = round((out.t_end_ns - t_gone) / 1e6, 2) if out.t_end_ns else None
        verdict.evidence(
            outcome={"ok": out.ok, "code": out.code, "message": out.message},
            disconnect_to_error_ms=after_ms,
            call_timeout_ms=CALL_TIMEOUT_MS,
            handler_sleep_ms=SLOW_MS,
            bound_ms=STOPPED_BOUND_MS,
        )
        assert not out.ok and out.code == "invocation_stopped", (
            f"trigger() on a function whose worker left ({mode}) returned "
            f"{'ok ' + repr(out.result) if out.ok else f'code {out.code!r} ({out.message})'}; "
            "the engine answered invocation_stopped"
        )
        assert after_ms is not None and after_ms <= STOPPED_BOUND_MS, (
            f"invocation_stopped surfaced {after_ms} ms after the target left, bound "
            f"{STOPPED_BOUND_MS} ms (the engine sent it at once)"
        )


@check(
    "cleanup.not_found_after",
    title="After a function is unregistered or its worker is gone, calls get function_not_found",
    contract="iii-protocol.md#5.4 (function_not_found) and #8.1; "
    "seed-external-workers.md#Worker Lifecycle",
)
async def test_not_found_after(iii_sdk: Any, verdict: Any) -> None:
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        caller, target, tconn = await caller_and_target(s)
        before = await caller.trigger("cl::gone", {"n": 0}, timeout_ms=CALL_TIMEOUT_MS)
        assert before.ok, f"the setup call failed: {before}"

        await target.unregister_function("cl::gone")
        await eng.wait_until(
            lambda: "cl::gone" not in {f.id for f in eng.registry.functions_of(tconn.id)},
            WAIT_S,
            "unregisterfunction cl::gone",
        )
        unreg = await caller.trigger("cl::gone", {"n": 1}, timeout_ms=CALL_TIMEOUT_MS)

        await make_gone(eng, target, tconn, "abort")
        await eng.wait_until(lambda: not tconn.alive, WAIT_S, "the target's cleanup")
        gone = await caller.trigger("cl::echo", {"n": 2}, timeout_ms=CALL_TIMEOUT_MS)
        direct = await eng.invoke("cl::echo", {"n": 3})
        verdict.evidence(
            after_unregister={"code": unreg.code, "message": unreg.message, "ms": unreg.elapsed_ms},
            after_disconnect={"code": gone.code, "message": gone.message, "ms": gone.elapsed_ms},
            engine_invoke=direct.error,
        )
        for what, out in (("unregistered", unreg), ("departed worker's", gone)):
            assert not out.ok and out.code == "function_not_found", (
                f"trigger() on the {what} function returned "
                f"{'ok ' + repr(out.result) if out.ok else f'code {out.code!r} ({out.message})'}; "
                "the engine answered function_not_found"
            )
            assert out.elapsed_ms < CALL_TIMEOUT_MS / 2, (
                f"function_not_found for the {what} function took {out.elapsed_ms:.0f} ms"
            )
        assert direct.error and direct.error["code"] == "function_not_found"


# --- cleanup.no_stale_replay ----------------------------------------------------------------------

#: What a worker registered and may take back, and when: while connected, while disconnected
#: (Python sends nothing then; Node drops `unregisterfunction` but queues `unregistertrigger`,
#: iii-protocol.md §7.2), or never.
ITEMS = ("fn cl::c", "fn cl::b with its trigger t2", "trigger t1 on cl::a", "type cl-x")
# Each item lists its phases in its own order, so the simplest plan (the one the gate runs)
# already mixes them: both functions and a trigger taken back while disconnected, a trigger and
# the trigger type while connected, cl::a kept.
PHASES = {
    ITEMS[0]: ("disconnected", "connected", "keep"),
    ITEMS[1]: ("disconnected", "connected", "keep"),
    ITEMS[2]: ("connected", "disconnected", "keep"),
    ITEMS[3]: ("connected", "disconnected", "keep"),
}


@check(
    "cleanup.no_stale_replay",
    title="Nothing unregistered (while connected or while disconnected) is replayed on reconnect",
    contract=f'{LIFECYCLE} ("On reconnect, the SDK re-registers everything" it has registered)',
)
@examples(gate=1, nightly=12)
@given(plan=st.fixed_dictionaries({i: st.sampled_from(p) for i, p in PHASES.items()}))
async def test_no_stale_replay(iii_sdk: Any, verdict: Any, plan: dict[str, str]) -> None:
    verdict.set_example(plan)
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        fns = {"cl::a": "echo", "cl::b": "echo", "cl::c": "echo"}
        w = await s.worker(reconnection=QUICK, functions=fns)
        await w.register_trigger_type("cl-x", "cleanup type")
        trig = {
            "t1": await w.register_trigger("http", "cl::a", {"api_path": "/t1"}),
            "t2": await w.register_trigger("http", "cl::b", {"api_path": "/t2"}),
        }
        conn = await s.connection(w, tuple(fns))
        await eng.wait_until(
            lambda: len(eng.registry.triggers_of(conn.id)) == 2, WAIT_S, "both triggers"
        )
        ids = {t.config["api_path"]: t.id for t in eng.registry.triggers_of(conn.id)}

        async def take_back(item: str) -> None:
            if item == ITEMS[0]:
                await w.unregister_function("cl::c")
            elif item == ITEMS[1]:
                await w.unregister_trigger(trig["t2"])
                await w.unregister_function("cl::b")
            elif item == ITEMS[2]:
                await w.unregister_trigger(trig["t1"])
            else:
                await w.unregister_trigger_type("cl-x")

        for item in ITEMS:
            if plan[item] == "connected":
                await take_back(item)
        await asyncio.sleep(0.05)  # let the unregister frames reach the engine
        await eng.stop_listening()
        eng.drop(conn, "abort")
        await eng.wait_until(lambda: not conn.alive, WAIT_S, "the drop")
        for item in ITEMS:
            if plan[item] == "disconnected":
                await take_back(item)
        await eng.start_listening()

        live = expected_live(plan)
        # Only what is replayed is graded (re-registering the live set is replay.*'s): wait for
        # the new connection, then for an answer to an invoke of an unknown function, which
        # the SDK sends only after its whole replay.
        back = await s.reconnected(w, conn, (), timeout=WAIT_S)
        await probe(eng, back)
        await asyncio.sleep(SETTLE_S)
        msgs = inbound(eng, back)
        stale = stale_frames(msgs, plan, ids)
        verdict.evidence(
            replay=[{k: v for k, v in m.items() if k != "data"} for m in msgs[:20]],
            expected_live=live,
            engine_lists=lists(eng),
        )
        assert not stale, (
            f"the reconnection replayed what was unregistered before it: {stale} (plan {plan})"
        )


def expected_live(plan: dict[str, str]) -> dict[str, list[str]]:
    fns = ["cl::a"]
    fns += [] if plan[ITEMS[1]] != "keep" else ["cl::b"]
    fns += [] if plan[ITEMS[0]] != "keep" else ["cl::c"]
    trigs = [p for p, i in (("/t1", ITEMS[2]), ("/t2", ITEMS[1])) if plan[i] == "keep"]
    types = ["cl-x"] if plan[ITEMS[3]] == "keep" else []
    return {"functions": sorted(fns), "triggers": trigs, "trigger_types": types}


def stale_frames(
    msgs: list[dict[str, Any]], plan: dict[str, str], ids: dict[str, str]
) -> list[str]:
    """Registration frames on the new connection for items taken back before it."""
    dead = {
        ("registerfunction", "cl::c"): plan[ITEMS[0]] != "keep",
        ("registerfunction", "cl::b"): plan[ITEMS[1]] != "keep",
        ("registertrigger", ids["/t2"]): plan[ITEMS[1]] != "keep",
        ("registertrigger", ids["/t1"]): plan[ITEMS[2]] != "keep",
        ("registertriggertype", "cl-x"): plan[ITEMS[3]] != "keep",
    }
    return [
        f"{m['type']} {m.get('id')}"
        for m in msgs
        if dead.get((str(m.get("type")), str(m.get("id"))), False)
    ]


# --- in-flight handlers across a drop --------------------------------------------------------------


async def inflight_drop(s: Scenario, mode: str) -> dict[str, Any]:
    """Calls in flight when the engine drops the worker, and one made while it is away:

    - ``e1`` engine -> worker, the handler is sleeping at the drop;
    - ``w1`` worker -> engine -> same worker, the handler is sleeping at the drop;
    - ``h1`` worker -> engine, never answered (the engine holds it) at the drop;
    - ``q1`` worker -> engine made after the SDK saw its first reconnect dial refused.
    """
    eng = s.engine
    w = await s.worker(reconnection=QUICK, functions={"cl::slow": {"kind": "sleep", "ms": 200}})
    conn = await s.connection(w, ("cl::slow",))
    hang = eng.intercept("cl::hang", never=True)
    remote = eng.intercept("cl::remote", result={"remote": True})
    nonce = uuid.uuid4().hex[:8]
    mark = {k: f"{k}-{nonce}" for k in ("e1", "w1", "h1", "q1")}
    e1 = asyncio.create_task(eng.invoke("cl::slow", {"m": mark["e1"]}, timeout=WAIT_S))
    w1 = asyncio.create_task(w.trigger("cl::slow", {"m": mark["w1"]}, timeout_ms=1500))
    h1 = asyncio.create_task(w.trigger("cl::hang", {"m": mark["h1"]}, timeout_ms=1500))
    running = {"e1", "w1"}
    await w.wait_event(
        lambda e: (
            e.get("event") == "invoked"
            and running <= {k for k, v in mark.items() if v in str(w.invocations())}
        ),
        WAIT_S,
        what="both slow handlers to start",
    )
    await eng.wait_until(lambda: hang.calls, WAIT_S, "the held call to reach the engine")
    # The first reconnect dial is refused (and recorded): after it the SDK knows it is away.
    eng.set_handshake(Refuse(503), times=1)
    since = len(eng.transcript.events)
    if mode.startswith("close"):
        eng.drop(conn, "close", int(mode[5:]), "conformance in-flight drop")
    else:
        eng.drop(conn, mode)
    e1_out = await e1
    await eng.transcript.wait_for(
        lambda e: e.kind == "handshake" and e.detail.get("result") == "refused",
        WAIT_S,
        "the refused reconnect dial",
        since=since,
    )
    q1 = asyncio.create_task(w.trigger("cl::remote", {"m": mark["q1"]}, timeout_ms=3000))
    back = await s.reconnected(w, conn, (), timeout=WAIT_S)  # re-registration is not graded here
    q1_out = await q1
    # Both handlers end 200 ms after they started; their results go out after that.
    with contextlib.suppress(WaitTimeout):
        await eng.wait_until(
            lambda: len(eng.transcript.notes("result_dropped", since=since)) >= 2,
            WAIT_S / 2,
            "the in-flight results",
        )
    await asyncio.sleep(SETTLE_S)
    for t in (w1, h1):
        t.cancel()
    return {
        "eng": eng,
        "worker": w,
        "old": conn,
        "new": back,
        "mark": mark,
        "e1": e1_out,
        "q1": q1_out,
        "intercepts": {"h1": hang.calls, "q1": remote.calls},
        "since": since,
    }


@check(
    "cleanup.inflight_results",
    title="Results of handlers in flight across a drop: sent on the next connection or dropped",
    contract="iii-protocol.md#11.19 and #7.2 (no contract line decides; reported as information)",
)
async def test_inflight_results(iii_sdk: Any, verdict: Any) -> None:
    async with scenario(iii_sdk, verdict) as s:
        r = await inflight_drop(s, "abort")
        eng, old, new = r["eng"], r["old"], r["new"]
        e1_id = r["e1"].invocation_id
        assert r["e1"].error and r["e1"].error.get("code") == "invocation_stopped"
        results = [
            m
            for m in eng.transcript.messages(direction=IN, since=r["since"])
            if m.get("type") == "invocationresult" and m.get("function_id") == "cl::slow"
        ]
        by_conn = Counter(
            e.conn
            for e in eng.transcript.frames(direction=IN, type="invocationresult", since=r["since"])
            if (e.message or {}).get("function_id") == "cl::slow"
        )
        dropped = [e.detail for e in eng.transcript.notes("result_dropped", since=r["since"])]
        verdict.evidence(
            engine_invocation=e1_id,
            results=[{k: m.get(k) for k in ("invocation_id", "result", "error")} for m in results],
            results_by_connection={str(k): v for k, v in by_conn.items()},
            old_connection=old.id,
            new_connection=new.id,
            result_dropped_notes=dropped,
        )
        e1_results = [m for m in results if m.get("invocation_id") == e1_id]
        assert len(e1_results) <= 1, f"the in-flight handler's result was sent {len(e1_results)}x"
        if e1_results:
            verdict.informational(
                f"the result of a handler in flight at the drop was sent on the next connection "
                f"(#{new.id}); the engine had already answered its caller invocation_stopped and "
                "dropped it (result_dropped)",
            )
        else:
            verdict.informational(
                "the result of a handler in flight at the drop was never sent (dropped by the SDK)"
            )


@check(
    "cleanup.no_duplicate_execution",
    title="No invocation runs (or is sent) twice across a reconnect",
    contract=f"{LIFECYCLE}; iii-protocol.md#11.7 and #11.9 (in-flight calls are not resent; a "
    "call made while disconnected is delivered once)",
)
@examples(gate=1, nightly=6)
@given(mode=st.sampled_from(("abort", "close1000", "reset", "close1001")))
async def test_no_duplicate_execution(iii_sdk: Any, verdict: Any, mode: str) -> None:
    verdict.set_example({"drop": mode})
    async with scenario(iii_sdk, verdict) as s:
        r = await inflight_drop(s, mode)
        w, eng, mark = r["worker"], r["eng"], r["mark"]
        ran = Counter(
            k for e in w.invocations("cl::slow") for k, v in mark.items() if v in str(e["payload"])
        )
        sent = Counter(
            k
            for m in eng.transcript.messages(direction=IN, type="invokefunction")
            for k, v in mark.items()
            if v in str(m.get("data"))
        )
        ids = Counter(
            m.get("invocation_id")
            for m in eng.transcript.messages(direction=IN, type="invokefunction")
            if m.get("invocation_id")
        )
        verdict.evidence(
            handler_runs=dict(ran),
            invokes_sent_by_worker=dict(sent),
            intercepted={k: len(v) for k, v in r["intercepts"].items()},
            queued_call={"ok": r["q1"].ok, "code": r["q1"].code, "ms": r["q1"].elapsed_ms},
        )
        twice = {k: n for k, n in {**sent, **ran}.items() if n > 1}
        reused = {i: n for i, n in ids.items() if n > 1}
        assert not twice, f"ran or sent more than once across the reconnect: {twice}"
        assert not reused, f"invocation ids sent more than once: {reused}"
        assert ran["e1"] == 1 and ran["w1"] == 1, f"in-flight handlers ran {dict(ran)}"
