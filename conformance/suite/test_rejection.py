"""rejection.*: how a worker takes ``registrationrejected`` (iii-protocol.md §7.3, §8.3, §11.16).

``FUNCTION_NAMESPACE_CONFLICT`` refuses one function: the worker keeps serving the others on the
same connection. ``WORKER_NAMESPACE_CONFLICT`` and any code the SDK does not know are fatal: state
``failed``, no reconnect, pending calls fail with the rejection, the socket is closed. Engine 0.23
closes the connection itself after a worker-name conflict (a Close frame with no status).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from conformance.drivers.client import Driver
from conformance.scenario import FAST, Scenario, scenario
from conformance.verdict import check
from fake_engine import Connection
from fake_engine.transcript import DISCONNECT, HTTP_REQUEST

MINE, TAKEN = "rj::mine", "rj::taken"
NEVER, ANSWER = "rj::never", "rj::answer"
ANSWER_VALUE = {"answered": True}
UNKNOWN_CODE = "III_CONFORMANCE_UNKNOWN_CODE"
PENDING_TIMEOUT_MS = 1000
# A fatal rejection must end a pending call long before its own timeout; failing it takes a few
# ms (Python: synchronously in the frame handler), so half the timeout is a wide margin.
FAIL_FAST_MS = PENDING_TIMEOUT_MS / 2
# With FAST the first reconnect comes 100 ms x (1 +/- 0.3) after the close, plus a loopback dial of
# a few ms: 500 ms of silence is over 3.5x the latest first retry.
QUIET_S = 0.5
# A worker that took a function conflict as fatal closes at once (it is handled in the frame
# handler); 300 ms also covers a first reconnect (<= 130 ms) more than twice.
NONFATAL_QUIET_S = 0.3


async def serving_worker(s: Scenario) -> tuple[Driver, Connection]:
    s.engine.intercept(NEVER, never=True)
    s.engine.intercept(ANSWER, result=ANSWER_VALUE)
    w = await s.worker(reconnection=FAST, functions={MINE: "echo", TAKEN: "echo"})
    return w, await s.connection(w, (MINE, TAKEN))


@check(
    "rejection.function_conflict_nonfatal",
    title="FUNCTION_NAMESPACE_CONFLICT refuses one function; the worker keeps serving the rest",
    contract="iii-protocol.md#11.16 FUNCTION_NAMESPACE_CONFLICT is non-fatal",
)
async def test_function_conflict_nonfatal(iii_sdk, verdict) -> None:
    async with scenario(iii_sdk, verdict) as s:
        w, conn = await serving_worker(s)
        tr = s.engine.transcript
        mark = len(tr.events)
        s.engine.reject_registration(
            conn,
            "FUNCTION_NAMESPACE_CONFLICT",
            function_id=TAKEN,
            owner_worker_id=str(uuid.uuid4()),
        )
        inbound = await s.engine.invoke(MINE, {"n": 1}, timeout=3)
        outbound = await w.trigger(ANSWER, {"n": 2}, timeout_ms=2000)
        await asyncio.sleep(NONFATAL_QUIET_S)  # a close or reconnect it caused shows by now
        state = await w.state()
        conns = tr.connections_of(w.worker_name)
        verdict.evidence(
            inbound=inbound.result if inbound.ok else inbound.error,
            outbound={"ok": outbound.ok, "result": outbound.result, "code": outbound.code},
            state=state,
            connections=conns,
            disconnects=[e.detail for e in tr.events[mark:] if e.kind == DISCONNECT],
        )
        assert inbound.ok and inbound.result == {"n": 1}, (
            f"after FUNCTION_NAMESPACE_CONFLICT for {TAKEN} an invocation of {MINE} returned "
            f"{inbound.error}; the worker must keep serving its other functions"
        )
        assert outbound.ok and outbound.result == ANSWER_VALUE, (
            f"after FUNCTION_NAMESPACE_CONFLICT trigger() returned {outbound.code} "
            f"{outbound.message}; the worker must keep working"
        )
        assert conn.alive and conns == [conn.id], (
            f"FUNCTION_NAMESPACE_CONFLICT ended the connection (worker connections {conns}); "
            "it is non-fatal and the connection stays open"
        )
        assert state in ("connected", "unsupported"), f"state after the conflict is {state!r}"


async def fatal_rejection(s: Scenario, verdict: Any, code: str, engine_closes: bool) -> list[str]:
    """Send a fatal rejection with a call pending; return what the SDK did against §7.3."""
    w, conn = await serving_worker(s)
    tr = s.engine.transcript
    call = asyncio.create_task(w.trigger(NEVER, {"pending": True}, timeout_ms=PENDING_TIMEOUT_MS))
    try:
        await tr.wait_frame(
            "invokefunction", conn=conn.id, timeout=3, where=lambda m: m.get("function_id") == NEVER
        )
        mark = len(tr.events)
        t_reject = time.monotonic_ns()
        s.engine.reject_registration(
            conn, code, worker_name=w.worker_name, owner_worker_id=str(uuid.uuid4())
        )
        if engine_closes:
            s.engine.drop(conn, "close", None)  # engine 0.23: a Close frame with no status
        out = await call
    finally:
        call.cancel()
    left = QUIET_S - (time.monotonic_ns() - t_reject) / 1e9
    if left > 0:
        await asyncio.sleep(left)
    state = await w.state()
    after = tr.events[mark:]
    closed = [e for e in after if e.kind == DISCONNECT and e.conn == conn.id]
    dials = [round((e.t_ns - t_reject) / 1e6, 1) for e in after if e.kind == HTTP_REQUEST]
    verdict.evidence(
        rejection_code=code,
        engine_closed=engine_closes,
        pending_call={
            "ok": out.ok,
            "code": out.code,
            "message": out.message,
            "class": out.error_class,
            "ended_ms_after_rejection": round((out.t_end_ns - t_reject) / 1e6, 1)
            if out.t_end_ns
            else None,
        },
        state=state,
        connection_closed=[e.detail for e in closed],
        dials_after_rejection_ms=dials,
    )
    problems = []
    if dials:
        problems.append(f"reconnected: dial(s) {dials} ms after the rejection")
    ended_ms = (out.t_end_ns - t_reject) / 1e6 if out.t_end_ns else None
    if out.ok or ended_ms is None or ended_ms > FAIL_FAST_MS:
        problems.append(
            f"the pending call was not failed by the rejection: it ended "
            f"{'OK' if out.ok else out.code} {ended_ms and round(ended_ms)} ms after it"
        )
    elif code not in f"{out.code} {out.message}":
        verdict.non_strict(f"the pending call failed with {out.code}: {out.message}, not {code}")
    if w.capabilities.get("state") and state != "failed":
        problems.append(f"state is {state!r}, not 'failed'")
    if not engine_closes and not closed:
        problems.append("the SDK did not close the connection")
    return problems


@check(
    "rejection.worker_conflict_fatal",
    title="WORKER_NAMESPACE_CONFLICT is fatal: failed, no reconnect, pending calls fail",
    contract="iii-protocol.md#11.16 WORKER_NAMESPACE_CONFLICT and unknown codes are fatal: state failed, no reconnect, pending calls fail with the rejection",
)
async def test_worker_conflict_fatal(iii_sdk, verdict) -> None:
    async with scenario(iii_sdk, verdict) as s:
        problems = await fatal_rejection(s, verdict, "WORKER_NAMESPACE_CONFLICT", True)
        assert not problems, (
            "after WORKER_NAMESPACE_CONFLICT (then the engine's close) the SDK "
            + "; ".join(problems)
            + " - the rejection is fatal: state failed, no reconnect, pending calls fail"
        )


@check(
    "rejection.unknown_code_fatal",
    title="A rejection code the SDK does not know is fatal too, and the SDK closes the socket",
    contract="iii-protocol.md#7.3 WORKER_NAMESPACE_CONFLICT or any other code: fatal - state failed, stop reconnecting, fail pending calls, close the socket",
)
async def test_unknown_code_fatal(iii_sdk, verdict) -> None:
    async with scenario(iii_sdk, verdict) as s:
        problems = await fatal_rejection(s, verdict, UNKNOWN_CODE, False)
        assert not problems, (
            f"after a registrationrejected with the unknown code {UNKNOWN_CODE} the SDK "
            + "; ".join(problems)
            + " - unknown codes are fatal: state failed, no reconnect, pending calls fail, "
            "socket closed"
        )
