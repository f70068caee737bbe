"""backoff.*: how long a worker waits between reconnect dials, measured at the engine.

Contract: seed-external-workers.md "Reconnection Config" (exponential backoff, initialDelayMs /
maxDelayMs / backoffMultiplier / jitterFactor / maxRetries, defaults 1000 / 30000 / 2 / 0.3 / -1)
and "Lifecycle Overview" (Reconnecting -> Max retries -> Failed). The formula is the one every
SDK implements (iii-protocol.md §7.1, §11.10-§11.12): attempt n (0-based, per outage) waits
``min(initial * multiplier**n, max) * (1 + J * U(-1, 1))`` -- the cap applies before jitter.

Gaps are measured at the engine (conformance.backoff_measure: anchors, overhead, tolerances):
each must lie in ``base_n * [1 - J, 1 + J]``, 2 ms early / 50 ms late tolerance. The engine
refuses dials with HTTP 503, a close before the upgrade, by not listening at all, or by stalling
the upgrade; an engine that accepts and closes at once (flapping) is only reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

from hypothesis import given

from conformance import backoff_measure as bm
from conformance.profiles import examples
from conformance.scenario import scenario
from conformance.strategies import reconnection_configs
from conformance.verdict import check
from fake_engine import handshake
from fake_engine.transcript import WaitTimeout

RECONNECTION = "seed-external-workers.md#Reconnection Config"
FORMULA = 'iii-protocol.md#7.1 "c = min(initial * multiplier^n, max); delay = c + c*jitter*(2U-1)"'
#: Nominal waiting per example in the envelope checks: a few attempts, cap often reached.
GAP_BUDGET_MS = 800.0


def _nightly() -> bool:
    import conformance.profiles

    return conformance.profiles.ACTIVE == "nightly"


def _fail_envelope(outage: bm.Outage, what: str) -> str:
    bad = outage.violations()
    lines = "; ".join(g.describe() for g in bad)
    return (
        f"{len(bad)} of {len(outage.gaps)} reconnect gaps outside the backoff envelope "
        f"({what}): {lines}"
    )


async def _envelope_example(iii_sdk: Any, verdict: Any, cfg: dict[str, Any], refusal: str) -> None:
    verdict.set_example(cfg)
    backoff = bm.Backoff.of(cfg)
    async with scenario(iii_sdk, verdict) as s:
        drv, conn = await bm.start_worker(s, cfg)
        n = backoff.gaps_within(GAP_BUDGET_MS)
        verdict.schedule(f"drop, then answer every dial with {refusal}; time {n} dials")
        outage = await bm.refused_outage(s, drv, conn, backoff, refusal, n)
    verdict.evidence(**outage.evidence())
    bm.pool(iii_sdk.label, outage, f"backoff.envelope.{refusal}")
    assert not outage.violations(), _fail_envelope(outage, f"dials refused with {refusal}")


@check(
    "backoff.envelope.http503",
    title="Reconnect gaps follow the backoff envelope when the upgrade gets HTTP 503",
    contract=RECONNECTION,
)
@examples(gate=2, nightly=12)
@given(cfg=reconnection_configs())
async def test_envelope_http503(iii_sdk, verdict, cfg):
    await _envelope_example(iii_sdk, verdict, cfg, "http503")


@check(
    "backoff.envelope.closed_before_upgrade",
    title="Reconnect gaps follow the backoff envelope when the engine closes before the upgrade",
    contract=RECONNECTION,
)
@examples(gate=1, nightly=8)
@given(cfg=reconnection_configs())
async def test_envelope_closed_before_upgrade(iii_sdk, verdict, cfg):
    await _envelope_example(iii_sdk, verdict, cfg, "closed_before_upgrade")


# --- refused: the engine is not listening, so refused dials are invisible -----------------------


@check(
    "backoff.envelope.refused",
    title="Refused dials (engine not listening) keep the schedule; the next dial follows re-listen",
    contract=RECONNECTION,
)
@examples(gate=1, nightly=6)
@given(cfg=reconnection_configs())
async def test_envelope_refused(iii_sdk, verdict, cfg):
    """The engine cannot see a refused dial, so what is checked is weaker: the first dial after
    the listener returns must be consistent with *some* attempt index k of the schedule (and come
    within one delay of the re-listen), and the 503-refused dials after it must follow the
    envelopes of k+1, k+2 for one such k."""
    verdict.set_example(cfg)
    backoff = bm.Backoff.of(cfg)
    bases = [backoff.envelope(k).base_ms for k in range(4)]
    # Stay away long enough for ~3 refused dials; come back mid-way through the 4th delay.
    window_ms = sum(bases[:3]) + bases[3] / 2
    after = 2
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        drv, conn = await bm.start_worker(s, cfg)
        verdict.schedule(
            f"stop listening, drop; re-listen after {window_ms:.0f} ms answering 503; "
            f"time the first dial and {after} more"
        )
        since = len(eng.transcript.events)
        await eng.stop_listening()
        t0 = bm.drop(eng, conn)
        await asyncio.sleep(max(0.0, window_ms / 1000 - (time.monotonic_ns() - t0) / 1e9))
        eng.set_handshake(handshake.Refuse(503))
        await eng.start_listening()
        # Stamped once listening: any dial before it was refused, so it cannot be seen.
        relisten = eng.transcript.note(0, "backoff_relisten").t_ns
        # Whatever attempt the SDK is at, each of these dials comes within one capped delay.
        capped_hi = backoff.max_delay_ms * (1 + backoff.jitter_factor) + bm.TOL_LATE_MS
        bound = (1 + after) * capped_hi / 1000 + 2.0
        got = await bm.wait_dials(eng, since, 1 + after, bound)
    first_ms, relisten_ms = (got[0].t_ns - t0) / 1e6, (relisten - t0) / 1e6
    ks = bm.feasible_attempts(backoff, first_ms, relisten_ms)
    consistent = [
        k
        for k in ks
        if all(g.ok for g in bm.gaps_of(backoff, got[0].t_ns, got[1:], "http503", k + 1, 0, "dial"))
    ]
    k = (consistent or ks or [0])[0]
    later = bm.gaps_of(backoff, got[0].t_ns, got[1:], "http503", k + 1, first_anchor="dial")
    verdict.evidence(
        config=backoff.__dict__,
        refusal="refused (not listening), then http503",
        relisten_after_ms=round(relisten_ms, 3),
        first_dial_after_drop_ms=round(first_ms, 3),
        first_dial_after_relisten_ms=round(first_ms - relisten_ms, 3),
        feasible_attempts=[a + 1 for a in ks],
        consistent_attempts=[a + 1 for a in consistent],
        gaps=[g.evidence() for g in later],
    )
    # Pool for the jitter checks only gaps whose base every consistent attempt index agrees on.
    sure = [
        g
        for j, g in enumerate(later)
        if len({backoff.envelope(c + 1 + j).base_ms for c in consistent}) == 1
    ]
    bm.pool(
        iii_sdk.label,
        bm.Outage(backoff, "http503", got[0].t_ns, got[1:], sure),
        "backoff.envelope.refused",
    )
    assert ks, (
        f"the first dial after the listener returned came {first_ms:.1f} ms after the drop "
        f"({first_ms - relisten_ms:.1f} ms after re-listen at {relisten_ms:.1f} ms): no attempt "
        f"index of the backoff schedule can produce it"
    )
    assert consistent, (
        f"after re-listen the dials were consistent with attempt(s) {[a + 1 for a in ks]} but "
        f"the following 503 gaps fit none of them: "
        + "; ".join(g.describe() for g in later if not g.ok)
    )


# --- stalled upgrade: the SDK must abandon the open after 10 s, then back off ------------------


@check(
    "backoff.envelope.stalled",
    title="A stalled upgrade is abandoned after the 10 s handshake timeout, then backed off",
    contract='iii-protocol.md#11 "12. Handshake-level failures (EOF before 101, stalled upgrade) are retried"',
    nightly=True,
)
@examples(gate=1, nightly=2)
@given(cfg=reconnection_configs(max_delay=(300, 800)))
async def test_envelope_stalled(iii_sdk, verdict, cfg):
    verdict.set_example(cfg)
    backoff = bm.Backoff.of(cfg)
    limit_s = 14.0  # the engine gives up later than any SDK should (10 s)
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        drv, conn = await bm.start_worker(s, cfg)
        verdict.schedule("drop; stall the first reconnect's upgrade; accept the next dial")
        since = len(eng.transcript.events)
        eng.set_handshake(handshake.Stall(limit_s), times=1)
        t0 = bm.drop(eng, conn)
        bound = limit_s + backoff.worst_wait_ms(range(2)) / 1000 + 2.0
        got = await bm.wait_dials(eng, since, 2, bound)
    gaps = bm.gaps_of(backoff, t0, got, "stalled", offset_ms=bm.HANDSHAKE_TIMEOUT_MS)
    gaps[1].early_ms = bm.STALL_EARLY_MS
    outage = bm.Outage(backoff, "stalled", t0, got, gaps)
    verdict.evidence(**outage.evidence(), handshake_timeout_ms=bm.HANDSHAKE_TIMEOUT_MS)
    stalled_for = gaps[1].gap_ms
    assert stalled_for < limit_s * 1000, (
        f"the SDK kept the stalled upgrade open {stalled_for:.0f} ms until the engine gave up; "
        f"it should abandon it after its {bm.HANDSHAKE_TIMEOUT_MS:.0f} ms handshake timeout"
    )
    assert not outage.violations(), _fail_envelope(outage, "stalled upgrade, then accepted")


# --- jitter 0: exact schedule, and the overhead calibration ----------------------------------------


@check(
    "backoff.no_jitter",
    title="With jitter_factor 0 every gap is exactly min(initial * multiplier^n, max)",
    contract=FORMULA,
)
async def test_deterministic_schedule(iii_sdk, verdict):
    """Also the calibration of the measurement: gap - base is the overhead of one dial."""
    async with scenario(iii_sdk, verdict) as s:
        verdict.schedule("drop, then answer every dial with 503 (jitter_factor 0)")
        outage = await bm.calibration_outage(s)
    cal = bm.record_calibration(iii_sdk.label, outage)
    verdict.evidence(**outage.evidence(), calibration=cal.evidence())
    assert not outage.violations(), _fail_envelope(outage, "jitter_factor 0")


# --- the cap ---------------------------------------------------------------------------------------

CAP_GAPS = 20
#: A capped gap above max + this is a delay above max (the overhead is 0.3-16 ms, median 2-5 ms).
CAP_MARGIN_MS = 10.0


@check(
    "backoff.cap",
    title="Delays stop growing at max_delay_ms; jitter applies after the cap",
    contract=RECONNECTION,
)
async def test_cap(iii_sdk, verdict):
    """``max_delay_ms`` bounds the nominal delay; the SDK formula applies jitter after the cap,
    so delays reach ``max * (1 + J)`` (iii-protocol.md §7.1, sdk-behaviour.md §10.5). A capped
    delay beyond that (+ tolerance) is FAILED; above ``max`` itself is NON-STRICT: the contract
    calls maxDelayMs the "Maximum retry delay cap". Only the upper side is judged here: delays
    that are too short are the envelope and jitter checks' business."""
    cfg = bm.Backoff.of(bm.CAPPED_CFG)
    async with scenario(iii_sdk, verdict) as s:
        verdict.schedule(f"drop, then answer every dial with 503; time {CAP_GAPS} dials")
        outage = await bm.capped_outage(s, CAP_GAPS)
    bm.pool(iii_sdk.label, outage, "backoff.cap")
    capped = [g for g in outage.gaps if g.env.base_ms >= cfg.max_delay_ms]
    over = [g for g in capped if g.delay_ms > g.env.hi_ms + g.late_ms]
    above = [
        g for g in capped if g.anchor == "dial" and g.gap_ms > cfg.max_delay_ms + CAP_MARGIN_MS
    ]
    verdict.evidence(
        **outage.evidence(),
        max_delay_ms=cfg.max_delay_ms,
        ceiling_with_jitter_ms=cfg.max_delay_ms * (1 + cfg.jitter_factor),
        capped_gaps=len(capped),
        above_max=len(above),
        largest_capped_gap_ms=round(max(g.gap_ms for g in capped), 3),
    )
    assert not over, (
        f"{len(over)} capped reconnect delays above max_delay_ms * (1 + J) = "
        f"{cfg.max_delay_ms * (1 + cfg.jitter_factor):.0f} ms + {bm.TOL_LATE_MS:.0f} ms: "
        + "; ".join(g.describe() for g in over)
    )
    if above:
        verdict.non_strict(
            f"{len(above)} of {len(capped)} capped delays exceeded max_delay_ms="
            f"{cfg.max_delay_ms:.0f} (largest gap {max(g.gap_ms for g in above):.1f} ms, "
            f"within max*(1+J)={cfg.max_delay_ms * (1 + cfg.jitter_factor):.0f} ms + tolerance): "
            "jitter is applied after the cap, so maxDelayMs is not a hard ceiling"
        )


# --- maxRetries --------------------------------------------------------------------------------------


async def _state_after(drv: Any, want: str, timeout: float) -> str:
    """Poll the SDK's state until ``want`` (bounded); ``unsupported`` returns at once."""
    deadline = time.monotonic() + timeout
    while True:
        st = await drv.state()
        if st in (want, "unsupported") or time.monotonic() >= deadline:
            return st
        await asyncio.sleep(0.05)


@check(
    "backoff.max_retries",
    title="max_retries=N: exactly 1+N dials in all, then state failed and no further dials",
    contract='seed-external-workers.md#Lifecycle Overview "Reconnecting -->|Max retries| Failed"',
)
@examples(gate=2, nightly=10)
@given(cfg=reconnection_configs(max_delay=(300, 600), max_retries=(0, 4)))
async def test_max_retries(iii_sdk, verdict, cfg):
    verdict.set_example(cfg)
    backoff = bm.Backoff.of(cfg)
    n = backoff.max_retries
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        drv, conn = await bm.start_worker(s, cfg)
        verdict.schedule(f"drop, then answer every dial with 503; expect {n} dials then silence")
        since = len(eng.transcript.events)
        eng.set_handshake(handshake.Refuse(503))
        t0 = bm.drop(eng, conn)
        with contextlib.suppress(WaitTimeout):
            await bm.wait_dials(eng, since, n, backoff.worst_wait_ms(range(n)) / 1000 + 2.0)
        got = bm.dials(eng, since)[:n]
        assert len(got) == n, (
            f"with max_retries={n} the SDK made only {len(got)} reconnect dial(s) within "
            f"{backoff.worst_wait_ms(range(n)) / 1000 + 2.0:.1f} s; expected {n} before `failed`"
        )
        # Another retry would come within one more delay (its envelope + tolerance) of the
        # last refused dial; wait that long plus 250 ms.
        window_s = (backoff.envelope(n).hi_ms + bm.TOL_LATE_MS) / 1000 + 0.25
        last = got[-1].t_ns if got else t0
        state = await _state_after(drv, "failed", window_s)
        left = window_s - (time.monotonic_ns() - last) / 1e9
        extra = await bm.silence(eng, since, n, max(0.0, left))
        total = len(bm.dials(eng))
    gaps = bm.gaps_of(backoff, t0, got + extra, "http503")
    verdict.evidence(
        config=backoff.__dict__,
        gaps=[g.evidence() for g in gaps],
        dials_total=total,
        expected_dials_total=1 + n,
        silence_window_ms=round(window_s * 1000, 1),
        state=state,
    )
    assert not extra, (
        f"with max_retries={n} the SDK made {n + len(extra)} reconnect dials ({1 + n + len(extra)} "
        f"in all); expected exactly {n} retries (1+{n} dials) and then `failed`"
    )
    if state == "unsupported":
        verdict.evidence(state_note="not exposed by this SDK: dial count and silence checked")
    else:
        assert state == "failed", (
            f"after {n} refused retries (max_retries={n}) the SDK reports state {state!r}, "
            "expected 'failed'"
        )


# --- the counter restarts after a successful connection -----------------------------------------

RESET_CFG = {
    "initial_delay_ms": 100,
    "backoff_multiplier": 2.0,
    "max_delay_ms": 1600,
    "jitter_factor": 0.2,
}


@check(
    "backoff.reset_after_success",
    title="After a successful reconnect, the next outage starts again at initial_delay_ms",
    contract='iii-protocol.md#11 "11. ... the counter resets after a successful connection"',
)
async def test_reset_after_success(iii_sdk, verdict):
    cfg = bm.Backoff.of(RESET_CFG)
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        drv, conn = await bm.start_worker(s, RESET_CFG)
        verdict.schedule("outage 1: drop, refuse 2 dials, accept; outage 2: drop, refuse 1")
        since = len(eng.transcript.events)
        eng.set_handshake(handshake.Refuse(503), times=2)
        t0 = bm.drop(eng, conn)
        conn2 = await s.reconnected(drv, conn, timeout=cfg.worst_wait_ms(range(3)) / 1000 + 5)
        first = bm.gaps_of(cfg, t0, bm.dials(eng, since), "http503")
        since2 = len(eng.transcript.events)
        eng.set_handshake(handshake.Refuse(503), times=1)
        t1 = bm.drop(eng, conn2)
        got = await bm.wait_dials(eng, since2, 2, cfg.worst_wait_ms(range(5)) / 1000 + 2)
    second = bm.gaps_of(cfg, t1, got, "http503")
    verdict.evidence(
        config=cfg.__dict__,
        outage1=[g.evidence() for g in first],
        outage2=[g.evidence() for g in second],
        gaps=[g.evidence() for g in second],
    )
    # Judged on the counter only (envelopes are the envelope checks' business): each gap of
    # the second outage must be closer, on a log scale, to its own attempt's base than to the
    # base it would have without a reset (the count continuing from outage 1).
    carried = len(first)
    for g in second:
        own, cont = g.env.base_ms, cfg.envelope(g.attempt + carried).base_ms
        if abs(math.log(g.delay_ms / own)) >= abs(math.log(g.delay_ms / cont)):
            raise AssertionError(
                f"gap {g.attempt + 1} of the second outage was {g.delay_ms:.1f} ms: closer to "
                f"attempt {g.attempt + carried + 1} (base {cont:.0f} ms) than to attempt "
                f"{g.attempt + 1} (base {own:.0f} ms): the retry counter was not reset after "
                f"the successful connection ({carried} dials in outage 1)"
            )


# --- the default config ------------------------------------------------------------------------------


@check(
    "backoff.default_config",
    title="Without a reconnection config: 1000 ms x2, jitter 0.3 (first gaps 700-1300, 1400-2600)",
    contract=RECONNECTION,
)
async def test_default_config(iii_sdk, verdict):
    n = 3 if _nightly() else 1  # 1 s in the gate; 1+2+4 s at night
    cfg = bm.Backoff.of(None)
    async with scenario(iii_sdk, verdict) as s:
        drv, conn = await bm.start_worker(s, None)
        verdict.schedule(f"no reconnection config; drop, answer 503; time {n} dial(s)")
        outage = await bm.refused_outage(s, drv, conn, cfg, "http503", n)
    verdict.evidence(**outage.evidence())
    assert not outage.violations(), _fail_envelope(outage, "SDK default config")


# --- flapping: accept, then close at once ------------------------------------------------------------

FLAP_CFG = {
    "initial_delay_ms": 100,
    "backoff_multiplier": 2.0,
    "max_delay_ms": 800,
    "jitter_factor": 0.0,
}
FLAP_WINDOW_S = 0.8


@check(
    "backoff.flapping",
    title="Engine accepts then closes at once: does the backoff keep growing? (reported only)",
    contract="sdk-behaviour.md#6.6 (no contract line: reported, never failed)",
)
async def test_flapping(iii_sdk, verdict):
    """Node resets its counter on open, so it re-dials at the initial rate forever; Python
    resets only after its replay, so the outcome races (sdk-behaviour.md §6.6, §10.4)."""
    cfg = bm.Backoff.of(FLAP_CFG)
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        drv, conn = await bm.start_worker(s, FLAP_CFG)
        verdict.schedule(f"drop; accept then close 1001 every dial for {FLAP_WINDOW_S} s")
        since = len(eng.transcript.events)
        eng.set_handshake(handshake.CloseAfterOpen(1001))
        t0 = bm.drop(eng, conn)
        await asyncio.sleep(FLAP_WINDOW_S)
        got = bm.dials(eng, since)
        eng.set_handshake(handshake.Accept())
    gaps_ms = [
        round((b - a) / 1e6, 1)
        for a, b in zip([t0] + [d.t_ns for d in got], [d.t_ns for d in got], strict=False)
    ]
    nearest = [
        1 + min(range(8), key=lambda k: abs(cfg.envelope(k).base_ms - gap)) for gap in gaps_ms
    ]
    verdict.evidence(config=cfg.__dict__, flap_gaps_ms=gaps_ms, nearest_attempts=nearest)
    grows = len(nearest) > 2 and max(nearest[1:]) > 2
    verdict.informational(
        f"{len(got)} dials in {FLAP_WINDOW_S:.1f} s of accept-then-close; gaps {gaps_ms} ms look "
        f"like attempts {nearest}: "
        + (
            "the backoff grows across connections that open and die"
            if grows
            else "the counter resets on every open, so the engine is re-dialled at the initial rate"
        )
    )
