"""The mini SDK itself, against the fake engine: correct with ``--bug none``, and each seeded
bug really present. The seeded-fault tests rely on both (a check that passes a bugged SDK is
only a finding if the bug is real)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from mini_sdk import BUGS, ReconnectionConfig, backoff_delay_ms

from conformance.drivers import schemas
from conformance.drivers.client import Driver, DriverTimeout
from conformance.scenario import Scenario, scenario
from fake_engine import Connection, WaitTimeout, handshake

# jitter 0 makes every delay exact; 50 ms keeps outages short.
STEADY = {
    "initial_delay_ms": 50,
    "max_delay_ms": 200,
    "backoff_multiplier": 2.0,
    "jitter_factor": 0,
}
# Loopback dial + 503 + asyncio scheduling measured at 1-6 ms per gap on this host (2 cores,
# under a parallel pytest load); 40 ms leaves room for a loaded CI runner without hiding a
# missing growth step (the smallest step checked is 50 ms).
GAP_TOL_MS = 40.0
TYPE_ID = "mini-type"


# --- helpers ------------------------------------------------------------------------------------
async def reconnect(s: Scenario, drv: Driver, previous: Connection) -> Connection:
    """The next connection that finished its replay (its metadata call names the worker)."""
    return await s.reconnected(drv, previous, (), timeout=10)


def inbound(s: Scenario, conn: Connection) -> list[dict[str, Any]]:
    return s.engine.transcript.messages(conn=conn.id, direction="in")


def identity(s: Scenario, conn: Connection) -> tuple[str, str]:
    (reg,) = s.engine.transcript.messages(conn=conn.id, direction="out", type="workerregistered")
    return reg["worker_id"], reg["reattach_token"]


def summary(frames: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A replay as comparable tuples: (type, id-ish field)."""
    out: list[tuple[Any, ...]] = []
    for f in frames:
        t = f["type"]
        if t == "reattach":
            out.append((t, f.get("previous_worker_id"), f.get("reattach_token")))
        elif t == "invokefunction":
            out.append((t, f["function_id"], f.get("invocation_id") is None))
        elif t in ("registertrigger",):
            out.append((t, f["function_id"]))
        else:
            out.append((t, f.get("id")))
    return out


async def wait_state(drv: Driver, state: str, timeout: float = 5.0) -> None:
    await drv.wait_event({"event": "state_changed", "state": state}, timeout, what=state)


# --- backoff formula (pure) ------------------------------------------------------------------
CFG = ReconnectionConfig(initial_delay_ms=100, max_delay_ms=800, jitter_factor=0.3)


def nominal(n: int) -> float:
    return min(100 * 2**n, 800)


def test_backoff_formula_correct() -> None:
    """§7.1: c = min(initial*mult^n, max); delay = c + c*J*(2U-1) spans [0.7c, 1.3c)."""
    for n in range(8):
        c = nominal(n)
        assert backoff_delay_ms(CFG, n, "none", 0.0) == pytest.approx(0.7 * c)
        assert backoff_delay_ms(CFG, n, "none", 0.5) == pytest.approx(c)
        assert backoff_delay_ms(CFG, n, "none", 0.999999) == pytest.approx(1.3 * c)


@pytest.mark.parametrize(
    "bug, n, u, expected",
    [
        ("no_jitter", 2, 0.0, 400),
        ("one_sided_jitter", 2, 0.0, 400),
        ("one_sided_jitter", 2, 0.75, 490),
        ("narrow_jitter", 2, 0.0, 360),
        ("wide_jitter", 2, 0.0, 40),
        ("no_backoff_growth", 5, 0.5, 100),
        ("no_cap", 5, 0.5, 3200),
    ],
)
def test_backoff_formula_bugs(bug: str, n: int, u: float, expected: float) -> None:
    assert backoff_delay_ms(CFG, n, bug, u) == pytest.approx(expected)
    assert backoff_delay_ms(CFG, n, "none", u) != pytest.approx(expected)


def test_other_bugs_leave_the_formula_alone() -> None:
    formula_bugs = {
        "no_jitter",
        "one_sided_jitter",
        "narrow_jitter",
        "wide_jitter",
        "no_backoff_growth",
        "no_cap",
    }
    for bug in set(BUGS) - formula_bugs:
        for n in range(6):
            for u in (0.0, 0.3, 0.9):
                assert backoff_delay_ms(CFG, n, bug, u) == backoff_delay_ms(CFG, n, "none", u)


class _Any:
    """Equal to anything (a field whose value the engine chooses)."""

    def __eq__(self, other: object) -> bool:
        return True


ANY = _Any()


# --- driver protocol --------------------------------------------------------------------------
async def test_driver_events_and_results_match_the_schemas(mini_sdk: Any) -> None:
    async with scenario(mini_sdk("none")) as s:
        drv = await s.worker(reconnection=STEADY, functions={"m::echo": "echo", "m::rec": "record"})
        outcomes = [
            await drv.trigger("m::echo", {"a": 1}),
            await drv.trigger("m::echo", {"a": 2}, void=True),
            await drv.trigger("m::nowhere", {}, timeout_ms=200),
        ]
        await drv.register_trigger_type(TYPE_ID, "a type")
        trig = await drv.register_trigger(TYPE_ID, "m::echo", {"k": 1})
        await drv.wait_event("trigger_type_call", 5)
        assert trig.trigger_id
        await drv.trigger("m::rec", {"r": 1})
        assert await drv.records("m::rec") == {"m::rec": [{"r": 1, "_caller_worker_id": ANY}]}
        await drv.unregister_trigger(trig)
        await drv.unregister_trigger_type(TYPE_ID)
        await drv.unregister_function("m::rec")
        assert await drv.state() == "connected"
        for out in outcomes:
            schemas.validate_result("trigger", dict(out.raw))
        for ev in drv.events:
            schemas.validate_event(ev)
        kinds = {e["event"] for e in drv.events}
        assert {"ready", "reply", "invoked", "state_changed", "trigger_type_call"} <= kinds


# --- replay, reattach --------------------------------------------------------------------------
REPLAY_BUGS = [
    "none",
    "no_replay",
    "duplicate_replay",
    "no_reattach",
    "stale_reattach",
    "replays_unregistered",
]


def expected_replay(
    bug: str, ident: tuple[str, str] | None, queued: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """§3.2 order after a reconnect, as ``summary`` tuples, for the seeded ``bug``."""
    out: list[tuple[Any, ...]] = []
    if ident is not None and bug != "no_reattach":
        out.append(("reattach", *ident))
    if bug != "no_replay":
        out.append(("registertriggertype", TYPE_ID))
        out += [("registerfunction", "a::echo")] * (2 if bug == "duplicate_replay" else 1)
        if bug == "replays_unregistered":
            out.append(("registerfunction", "b::echo"))
        out.append(("registertrigger", "a::echo"))
    out += queued
    out.append(("invokefunction", "engine::workers::register", True))
    return out


@pytest.mark.parametrize("bug", REPLAY_BUGS)
async def test_replay_after_reconnects(mini_sdk: Any, bug: str) -> None:
    """Two reconnects; the second outage also queues a void call (flushed before metadata)."""
    async with scenario(mini_sdk(bug)) as s:
        drv = await s.worker(reconnection=STEADY, functions={"a::echo": "echo", "b::echo": "echo"})
        await drv.register_trigger_type(TYPE_ID)
        await drv.register_trigger("http", "a::echo", {"api_path": "/a"})  # engine-provided type
        await drv.unregister_function("b::echo")
        c1 = await s.connection(drv)
        await s.engine.wait_until(
            lambda: s.engine.registry.triggers, 5, "the trigger to be registered"
        )
        s.engine.drop(c1, "abort")
        c2 = await reconnect(s, drv, c1)
        await s.engine.stop_listening()
        s.engine.drop(c2, "close", 1001)
        await wait_state(drv, "reconnecting")
        await drv.trigger("a::echo", {"q": 1}, void=True)
        await s.engine.start_listening()
        c3 = await reconnect(s, drv, c2)
        first = identity(s, c1)
        got2, got3 = summary(inbound(s, c2)), summary(inbound(s, c3))
        assert got2 == expected_replay(bug, first, [])
        ident3 = first if bug == "stale_reattach" else identity(s, c2)
        queued = [("invokefunction", "a::echo", True)]
        assert got3 == expected_replay(bug, ident3, queued)
        if bug == "none":
            tids = {
                m["id"]
                for c in (c1, c2, c3)
                for m in inbound(s, c)
                if m["type"] == "registertrigger"
            }
            assert len(tids) == 1, "the trigger id is stable across reconnects"


# --- backoff on the wire -----------------------------------------------------------------------
@pytest.mark.parametrize("bug", ["none", "no_backoff_growth", "no_cap"])
async def test_backoff_gaps_on_the_wire(mini_sdk: Any, bug: str) -> None:
    """Dials refused with 503: each gap is the formula's delay (jitter 0) plus dial overhead."""
    cfg = ReconnectionConfig.from_dict(STEADY)
    async with scenario(mini_sdk(bug)) as s:
        drv = await s.worker(reconnection=STEADY, functions={"a::echo": "echo"})
        c1 = await s.connection(drv)
        refused = 4
        s.engine.set_handshake(handshake.Refuse(503), times=refused)
        mark = len(s.engine.transcript)
        s.engine.drop(c1, "abort")
        await reconnect(s, drv, c1)
        drop_ns = next(
            e.t_ns for e in s.engine.transcript.events[mark:] if e.kind in ("abort", "disconnect")
        )
        dials = s.engine.transcript.dial_times(since=mark)
        assert len(dials) == refused + 1
        times = [drop_ns, *dials]
        gaps = [(b - a) / 1e6 for a, b in zip(times, times[1:], strict=False)]
        expected = [backoff_delay_ms(cfg, n, bug, 0.5) for n in range(len(gaps))]
        for n, (gap, exp) in enumerate(zip(gaps, expected, strict=True)):
            assert exp - 1 <= gap <= exp + GAP_TOL_MS, f"gap {n}: {gap:.1f} ms vs {exp} ms ({gaps})"


# --- max retries and counter reset ----------------------------------------------------------------
@pytest.mark.parametrize(
    "bug, redials", [("none", 2), ("max_retries_off_by_one", 3), ("no_counter_reset", 0)]
)
async def test_max_retries_per_outage(mini_sdk: Any, bug: str, redials: int) -> None:
    """max_retries=2: an outage that heals after one refusal resets the counter; the next
    outage then gets exactly 2 redials before ``failed`` (§11.11)."""
    rc = {**STEADY, "initial_delay_ms": 20, "max_delay_ms": 40, "max_retries": 2}
    async with scenario(mini_sdk(bug)) as s:
        drv = await s.worker(reconnection=rc, functions={"a::echo": "echo"})
        c1 = await s.connection(drv)
        s.engine.set_handshake(handshake.Refuse(503), times=1)
        s.engine.drop(c1, "abort")
        c2 = await reconnect(s, drv, c1)
        s.engine.set_handshake(handshake.Refuse(503))
        mark = len(s.engine.transcript)
        s.engine.drop(c2, "abort")
        await wait_state(drv, "failed")
        await asyncio.sleep(0.3)  # > 2x the largest delay: no dial may follow `failed`
        assert len(s.engine.transcript.dial_times(since=mark)) == redials
        assert await drv.state() == "failed"


# --- timeouts -----------------------------------------------------------------------------------
# trigger() reply overhead (driver + pipe) measured at 1-3 ms; 60 ms bounds it on a loaded host.
TIMEOUT_TOL_MS = 60.0


@pytest.mark.parametrize("bug", ["none", "timeout_early", "timeout_never_fires"])
async def test_trigger_timeout(mini_sdk: Any, bug: str) -> None:
    async with scenario(mini_sdk(bug)) as s:
        drv = await s.worker(reconnection=STEADY, invocation_timeout_ms=500)
        s.engine.intercept("x::hole", never=True)
        s.engine.intercept("x::late", result={"late": True}, delay_s=0.6)
        if bug == "timeout_never_fires":
            with pytest.raises(DriverTimeout):
                await drv.trigger("x::hole", {}, timeout_ms=300, wait_timeout=1.5)
            return
        scale = 0.5 if bug == "timeout_early" else 1.0
        for timeout_ms, target, expected_ms in (
            (300, "x::hole", 300),
            (0, "x::hole", 500),
            (300, "x::late", 300),
        ):
            out = await drv.trigger(target, {}, timeout_ms=timeout_ms)
            assert out.code == "TIMEOUT", out
            assert out.message == f"invocation timed out after {expected_ms}ms"
            lo = expected_ms * scale
            assert lo <= out.elapsed_ms <= lo + TIMEOUT_TOL_MS, out
        await asyncio.sleep(0.4)  # the late result arrives and is dropped quietly
        assert (await drv.trigger("x::late", {}, timeout_ms=2000)).result == {"late": True}


# --- inbound invocations ----------------------------------------------------------------------------
PAYLOAD = {
    "f": 1.5,
    "n": None,
    "big": 2**53 + 1,
    "s": "ü€😀\u0000",
    "l": [0.1, None, {"z": -2.5e-300}],
    "e": {},
}


@pytest.mark.parametrize(
    "bug", ["none", "payload_mangling", "no_not_found_reply", "drops_malformed"]
)
async def test_inbound_invocations(mini_sdk: Any, bug: str) -> None:
    async with scenario(mini_sdk(bug)) as s:
        drv = await s.worker(
            reconnection=STEADY,
            functions={"f::echo": "echo", "f::boom": {"kind": "fail", "message": "boom"}},
        )
        conn = await s.connection(drv, ("f::echo", "f::boom"))
        echoed = await s.engine.invoke("f::echo", PAYLOAD, timeout=3)
        assert (echoed.result == PAYLOAD) is (bug != "payload_mangling"), echoed
        failed = await s.engine.invoke("f::boom", {}, timeout=3)
        assert failed.error and failed.error["code"] == "invocation_failed"
        assert failed.error["message"] == "boom"

        inv_id = "00000000-0000-4000-8000-000000000001"
        s.engine.send(
            conn,
            {
                "type": "invokefunction",
                "invocation_id": inv_id,
                "function_id": "f::ghost",
                "data": {},
            },
        )
        reply = s.engine.transcript.wait_frame(
            "invocationresult",
            conn=conn.id,
            timeout=1.0,
            where=lambda m: m.get("invocation_id") == inv_id,
        )
        if bug == "no_not_found_reply":
            with pytest.raises(WaitTimeout):
                await reply
        else:
            ev = await reply
            assert ev.message["error"]["code"] == "function_not_found"

        s.engine.send_raw(conn, "{this is not json")
        s.engine.send_raw(conn, '{"type":"nosuchtype"}')
        after = s.engine.invoke("f::echo", {"still": "alive"}, timeout=1.0)
        if bug == "drops_malformed":
            with pytest.raises(WaitTimeout):
                await after
        else:
            assert (await after).result == {"still": "alive"}
        with contextlib.suppress(Exception):
            await drv.shutdown(timeout=3)
