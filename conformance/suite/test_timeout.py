"""timeout.*: a worker's own ``trigger()`` calls end by their deadline, whatever the engine does.

The engine never times a worker's call out (iii-protocol.md §5.4, §12.5): the SDK must, with
``code == "TIMEOUT"`` at the per-call ``timeout_ms`` or the connect-time default (§6). These checks
make the engine stay silent (``intercept(never=True)``), answer late, drop the connection, refuse
reconnects, or let the worker exhaust its retries, and measure when and how each call ends.

Timing bounds: a call may end in ``[timeout - EARLY_MS, timeout + LATE_MS]``, measured inside the
driver around the SDK call (monotonic clock).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conformance.drivers.client import Driver, TriggerOutcome
from conformance.profiles import examples
from conformance.scenario import FAST, Scenario, scenario
from conformance.verdict import check
from fake_engine import handshake as hs
from fake_engine.transcript import HANDSHAKE, HTTP_REQUEST, Event

# Lateness allowed after the deadline. Measured on this harness (2-CPU loopback box, 40 sequential
# + 40 concurrent calls of 150-600 ms per SDK, plus calls in flight across a reconnect): Python
# 0.25.0 ended 0.7-3.4 ms late idle and at most 8.6 ms late with both CPUs saturated by busy loops;
# Node 0.22.1 at most 7.1 ms late. sdk-behaviour.md §5 reports 1-9 ms. 40 ms is ~4.5x the worst
# measured lateness, to absorb CI scheduling noise; a wrong timer (default instead of per-call,
# double deadline, no timeout at all) misses it by far more.
LATE_MS = 40.0
# Node's timers run on libuv's millisecond loop clock, cached at the start of a loop turn, so a
# timer can fire just under its nominal delay: measured down to 0.45 ms early. Python never early.
EARLY_MS = 1.0
# A connect-time default far from every per-call value: a per-call timeout the SDK ignored shows.
FAR_DEFAULT_MS = 10_000

NEVER = "tmo::never"  # the engine never answers calls to it
ANSWER = "tmo::answer"  # the engine answers at once
ANSWER_VALUE = {"answered": True}

timeouts_ms = st.integers(min_value=150, max_value=600)


def in_bounds(out: TriggerOutcome, timeout_ms: float) -> bool:
    return timeout_ms - EARLY_MS <= out.elapsed_ms <= timeout_ms + LATE_MS


def summary(out: TriggerOutcome, timeout_ms: float | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "ok": out.ok,
        "code": out.code,
        "message": out.message,
        "elapsed_ms": round(out.elapsed_ms, 3),
    }
    if timeout_ms is not None:
        d["timeout_ms"] = timeout_ms
        d["late_ms"] = round(out.elapsed_ms - timeout_ms, 3)
    return d


def assert_timed_out(out: TriggerOutcome, timeout_ms: float, what: str) -> None:
    """The contract of §6: TIMEOUT, not earlier than the deadline, not later than the tolerance."""
    assert not out.ok and out.code == "TIMEOUT", (
        f"{what}: the SDK returned {summary(out)}; the contract (iii-protocol.md §6) is an error "
        f"with code TIMEOUT after {timeout_ms} ms"
    )
    assert in_bounds(out, timeout_ms), (
        f"{what}: TIMEOUT after {out.elapsed_ms:.1f} ms; the contract is {timeout_ms} ms "
        f"(allowed window [{timeout_ms - EARLY_MS}, {timeout_ms + LATE_MS}] ms)"
    )


async def silent_engine_worker(
    s: Scenario, invocation_timeout_ms: int | None = None, **kw: Any
) -> Driver:
    s.engine.intercept(NEVER, never=True)
    s.engine.intercept(ANSWER, result=ANSWER_VALUE)
    return await s.worker(invocation_timeout_ms=invocation_timeout_ms, **kw)


def refused_dials(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == HANDSHAKE and e.detail.get("result") == "refused"]


# -- deadlines --------------------------------------------------------------------------------


@check(
    "timeout.per_call",
    title="A call the engine never answers fails with TIMEOUT at its per-call timeout_ms",
    contract="iii-protocol.md#6 Timeouts: per-call override; InvocationError(code=TIMEOUT) on expiry",
)
@examples(gate=2, nightly=15)
@given(timeouts=st.lists(timeouts_ms, min_size=1, max_size=3))
async def test_per_call_timeout(iii_sdk, verdict, timeouts: list[int]) -> None:
    """Concurrent calls with their own deadlines each end on their own timer."""
    verdict.set_example(timeouts)
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s, invocation_timeout_ms=FAR_DEFAULT_MS)
        outs = await asyncio.gather(
            *(w.trigger(NEVER, {"call": i}, timeout_ms=t) for i, t in enumerate(timeouts))
        )
        verdict.evidence(
            calls=[summary(o, t) for o, t in zip(outs, timeouts, strict=True)],
            default_ms=FAR_DEFAULT_MS,
        )
        for i, (out, t) in enumerate(zip(outs, timeouts, strict=True)):
            assert_timed_out(out, t, f"call {i} with timeout_ms={t} (default {FAR_DEFAULT_MS})")


@check(
    "timeout.default",
    title="Without timeout_ms a call fails with TIMEOUT at the connect-time invocation timeout",
    contract="iii-protocol.md#6 Timeouts: default InitOptions.invocation_timeout_ms / invocationTimeoutMs",
)
@examples(gate=2, nightly=15)
@given(default_ms=timeouts_ms, calls=st.integers(min_value=1, max_value=2))
async def test_default_timeout(iii_sdk, verdict, default_ms: int, calls: int) -> None:
    verdict.set_example({"invocation_timeout_ms": default_ms, "calls": calls})
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s, invocation_timeout_ms=default_ms)
        outs = await asyncio.gather(*(w.trigger(NEVER, {"call": i}) for i in range(calls)))
        verdict.evidence(calls=[summary(o, default_ms) for o in outs])
        for i, out in enumerate(outs):
            assert_timed_out(out, default_ms, f"call {i} without timeout_ms (default {default_ms})")


@check(
    "timeout.error_shape",
    title="The timeout error has code TIMEOUT and message 'invocation timed out after <ms>ms'",
    contract='iii-protocol.md#6 Timeouts: InvocationError(code="TIMEOUT", message="invocation timed out after <ms>ms")',
)
async def test_timeout_error_shape(iii_sdk, verdict) -> None:
    timeout_ms = 150
    expected = f"invocation timed out after {timeout_ms}ms"
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s)
        out = await w.trigger(NEVER, {}, timeout_ms=timeout_ms)
        verdict.evidence(outcome=summary(out, timeout_ms), error_class=out.error_class)
        assert_timed_out(out, timeout_ms, f"call with timeout_ms={timeout_ms}")
        if out.message == expected:
            return
        assert out.message and out.message.endswith(expected), (
            f"timeout message is {out.message!r}; the contract is {expected!r}"
        )
        verdict.non_strict(
            f"message is {out.message!r}: the code is prefixed into it (contract: {expected!r}; "
            "sdk-behaviour.md §10.7)",
            expected_message=expected,
        )


@check(
    "timeout.zero",
    title="What timeout_ms=0 means: the default timeout or an immediate TIMEOUT",
    contract="sdk-behaviour.md#10.6 timeout_ms=0 means different things",
)
async def test_timeout_zero(iii_sdk, verdict) -> None:
    """No contract line decides 0; the check documents the SDK's choice (both end in TIMEOUT)."""
    default_ms = 300
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s, invocation_timeout_ms=default_ms)
        out = await w.trigger(NEVER, {}, timeout_ms=0)
        verdict.evidence(outcome=summary(out), default_ms=default_ms)
        assert not out.ok and out.code == "TIMEOUT", (
            f"timeout_ms=0 returned {summary(out)}; expected a TIMEOUT (immediate or at the "
            f"{default_ms} ms default)"
        )
        sent = [
            m
            for m in s.engine.transcript.messages(type="invokefunction")
            if m.get("function_id") == NEVER
        ]
        verdict.evidence(frame_sent=bool(sent))
        if out.elapsed_ms <= LATE_MS:
            meaning = "an immediate TIMEOUT (0 is a real deadline)"
        else:
            assert in_bounds(out, default_ms), (
                f"timeout_ms=0 timed out after {out.elapsed_ms:.1f} ms: neither immediate nor at "
                f"the {default_ms} ms default"
            )
            meaning = f"the default timeout ({default_ms} ms; 0 counts as unset)"
        verdict.informational(
            f"timeout_ms=0 means {meaning}; TIMEOUT after {out.elapsed_ms:.1f} ms, "
            f"invokefunction {'sent' if sent else 'not sent'}"
        )


# -- late results -------------------------------------------------------------------------------


@check(
    "timeout.late_result_ignored",
    title="A result arriving after the timeout is dropped and the worker keeps working",
    contract="iii-protocol.md#11.8 A result arriving after the SDK timeout is dropped silently",
)
async def test_late_result_ignored(iii_sdk, verdict) -> None:
    timeout_ms, delay_s = 150, 0.35
    late_fn = "tmo::late"
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s, functions={"tmo::echo": "echo"})
        conn = await s.connection(w, ("tmo::echo",))
        s.engine.intercept(late_fn, result={"late": True}, delay_s=delay_s)
        out = await w.trigger(late_fn, {"n": 1}, timeout_ms=timeout_ms)
        verdict.evidence(late_call=summary(out, timeout_ms), answer_delay_ms=delay_s * 1000)
        assert_timed_out(out, timeout_ms, f"call answered after {delay_s * 1000:.0f} ms")

        tr = s.engine.transcript
        late = await tr.wait_frame("invocationresult", conn=conn.id, direction="out", timeout=3)
        late_id = late.message["invocation_id"]
        mark = len(tr.events)
        nxt = await w.trigger(ANSWER, {"n": 2}, timeout_ms=2000)
        inbound = await s.engine.invoke("tmo::echo", {"n": 3}, timeout=3)
        about_late = [
            m for m in tr.messages(conn=conn.id, since=mark) if m.get("invocation_id") == late_id
        ]
        verdict.evidence(
            next_call=summary(nxt),
            inbound_after=inbound.result,
            frames_about_late_result=about_late,
            connections=tr.connections_of(w.worker_name),
        )
        assert nxt.ok and nxt.result == ANSWER_VALUE, (
            f"after a late result the next trigger() returned {summary(nxt)}; expected "
            f"{ANSWER_VALUE} (the late result must be dropped, the worker keep working)"
        )
        assert inbound.ok and inbound.result == {"n": 3}, (
            f"after a late result the worker answered an invocation with {inbound}"
        )
        assert tr.connections_of(w.worker_name) == [conn.id] and conn.alive, (
            "the worker reconnected after a late result: connections "
            f"{tr.connections_of(w.worker_name)}; the contract drops it silently"
        )
        assert not about_late, f"the worker answered the late result: {about_late}"


# -- connection loss ----------------------------------------------------------------------------


@check(
    "timeout.in_flight_drop",
    title="A call in flight when the connection drops ends in TIMEOUT at its full timeout",
    contract="iii-protocol.md#11.9 Pending calls are not rejected when the connection drops",
)
async def test_in_flight_call_across_drop(iii_sdk, verdict) -> None:
    """Graded by contract: TIMEOUT within bounds is OK; whether it is resent is informational."""
    timeout_ms = 600
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s, reconnection=FAST)
        conn = await s.connection(w)
        tr = s.engine.transcript
        call = asyncio.create_task(w.trigger(NEVER, {"in_flight": True}, timeout_ms=timeout_ms))
        try:
            sent = await tr.wait_frame(
                "invokefunction",
                conn=conn.id,
                timeout=3,
                where=lambda m: m.get("function_id") == NEVER,
            )
            inv_id = sent.message["invocation_id"]
            s.engine.drop(conn, "abort")
            new = await s.reconnected(w, conn, timeout=5)
            reconnected_ms = (new.connected_ns - sent.t_ns) / 1e6
            out = await call
        finally:
            call.cancel()
        resent = [
            m
            for m in tr.messages(conn=new.id, type="invokefunction")
            if m.get("invocation_id") == inv_id
        ]
        verdict.evidence(
            outcome=summary(out, timeout_ms),
            invocation_id=inv_id,
            reconnected_after_ms=round(reconnected_ms, 1),
            resent_on_new_connection=len(resent),
        )
        assert_timed_out(out, timeout_ms, "call in flight across a drop and reconnect")
        how = "resent on the new connection" if resent else "not resent on the new connection"
        verdict.informational(
            f"in-flight call {how}; it ended in TIMEOUT after {out.elapsed_ms:.0f} ms although "
            f"the worker was connected again {reconnected_ms:.0f} ms after sending it"
        )


@check(
    "timeout.while_disconnected",
    title="A call made while reconnecting is delivered after the reconnect (or times out in bounds)",
    contract="iii-protocol.md#7.2 Offline queue: invokes made while disconnected are sent on the next connection",
)
async def test_call_while_disconnected(iii_sdk, verdict) -> None:
    timeout_ms = 3000
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s, reconnection=FAST)
        conn = await s.connection(w)
        tr = s.engine.transcript
        s.engine.set_handshake(hs.Refuse(503), times=1)
        mark = len(tr.events)
        s.engine.drop(conn, "abort")
        # The refused dial proves the SDK knows it is disconnected before the call; the next
        # dial (FAST: 200 ms x (1 +/- 0.3) later) is accepted.
        await tr.wait_for(
            lambda e: e.kind == HANDSHAKE and e.detail.get("result") == "refused",
            timeout=3,
            what="a refused reconnect",
            since=mark,
        )
        out = await w.trigger(ANSWER, {"queued": True}, timeout_ms=timeout_ms)
        delivered = [
            (e.conn, round((e.t_ns - out.t_start_ns) / 1e6, 1))
            for e in tr.frames(direction="in", type="invokefunction", since=mark)
            if e.message and e.message.get("function_id") == ANSWER
        ]
        verdict.evidence(
            outcome=summary(out, timeout_ms),
            refused_dials=len(refused_dials(tr.events[mark:])),
            delivered_on_conn_after_ms=delivered,
        )
        if out.ok:
            assert out.result == ANSWER_VALUE, f"queued call returned {out.result!r}"
            assert len(delivered) == 1, f"queued call delivered {len(delivered)} times: {delivered}"
            return
        assert_timed_out(out, timeout_ms, "call made while disconnected")
        verdict.informational(
            f"a call made while disconnected was not delivered after the reconnect; it timed out "
            f"after {out.elapsed_ms:.0f} ms (delivered: {delivered})"
        )


@check(
    "timeout.after_failed",
    title="A call after the reconnect loop gave up (max_retries) ends by its timeout",
    contract="sdk-behaviour.md#7.3 After failed, trigger() is not rejected straight away; it ends in TIMEOUT",
)
async def test_call_after_failed(iii_sdk, verdict) -> None:
    """Failing fast would be better; queueing and timing out is the measured behaviour (§10.13)."""
    max_retries, timeout_ms = 1, 300
    async with scenario(iii_sdk, verdict) as s:
        w = await silent_engine_worker(s, reconnection={**FAST, "max_retries": max_retries})
        conn = await s.connection(w)
        tr = s.engine.transcript
        s.engine.set_handshake(hs.Refuse(503))
        mark = len(tr.events)
        s.engine.drop(conn, "abort")
        await s.engine.wait_until(
            lambda: len(refused_dials(tr.events[mark:])) >= max_retries,
            3,
            f"{max_retries} refused reconnects",
        )
        # The next backoff would end within 1.3 x 200 ms; silence past that means the loop stopped.
        await asyncio.sleep(0.4)
        dials_before = len(refused_dials(tr.events[mark:]))
        state = await w.state()
        verdict.evidence(refused_dials_before_call=dials_before, state=state)
        assert dials_before == max_retries, (
            f"with max_retries={max_retries} the SDK dialled {dials_before} times after the drop "
            "(iii-protocol.md §11.11); cannot reach the failed state"
        )
        if w.capabilities.get("state"):
            assert state == "failed", f"after max_retries the SDK reports state {state!r}"
        out = await w.trigger(NEVER, {"after_failed": True}, timeout_ms=timeout_ms)
        dials_after = [e for e in tr.events[mark:] if e.kind == HTTP_REQUEST]
        verdict.evidence(
            state=state,
            outcome=summary(out, timeout_ms),
            dials_after_drop=len(dials_after),
        )
        if not out.ok and out.code != "TIMEOUT" and out.elapsed_ms < timeout_ms - EARLY_MS:
            return  # failed fast with its own error: better than the measured behaviour
        assert_timed_out(out, timeout_ms, "call after the state became failed")
        verdict.informational(
            f"after max_retries (state {state!r}) trigger() does not fail fast: it ended in TIMEOUT "
            f"after {out.elapsed_ms:.0f} ms; no reconnect attempt followed ({len(dials_after)} "
            "dial(s) since the drop)"
        )
