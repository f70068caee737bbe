"""jitter.*: are reconnect delays spread uniformly over ``base * [1 - J, 1 + J]``?

Contract: seed-external-workers.md "Reconnection Config" (``jitterFactor``: "Random jitter 0-1
to prevent thundering herd"); the shape is the SDKs' formula ``base * (1 + J * U(-1, 1))``
(iii-protocol.md §7.1, §12.15). Normalised gaps ``u = (gap - overhead) / base`` must be uniform
on ``[1 - J, 1 + J]`` (anchors.md §3.4):

* gate: every gap inside its envelope, and a sample-range test (range / width ~ Beta(n-1, 2))
  on >= 25 pooled gaps -- catches no jitter, one-sided and too-narrow jitter (range) and
  too-wide jitter (envelope);
* nightly: KS and chi-square on >= 60 pooled gaps, alpha 0.001, Holm-corrected;
* herd: workers dropped at once must not come back in lockstep.

Gaps are pooled from every backoff check of the run (conformance.backoff_measure.POOL); a check
that finds too few measures the rest itself, so each works alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conformance import backoff_measure as bm
from conformance import stats
from conformance.scenario import scenario
from conformance.verdict import check
from fake_engine.transcript import HTTP_REQUEST

JITTER = 'seed-external-workers.md#Reconnection Config "jitterFactor: Random jitter 0-1 to prevent thundering herd"'
#: The gate's range test runs at alpha 0.001 (not anchors.md's 1 %: two SDKs per run would give
#: a false FAILED every ~50 runs). n=25: with the measured overhead noise added (simulated in
#: tests/conformance/test_stats.py), one-sided or half-width jitter (range <= 0.5 of the band)
#: still always falls below the critical range (0.686); at n=15 (critical 0.528) the noise
#: lets ~15 % of such samples through.
GATE_N = 25
NIGHTLY_N = 60


def _nightly() -> bool:
    import conformance.profiles

    return conformance.profiles.ACTIVE == "nightly"


async def _sample(
    iii_sdk: Any, verdict: Any, need: int, min_hw: float, cfg: dict[str, Any], source: str
) -> bm.JitterSample:
    """The SDK's pooled gaps (half-width >= ``min_hw`` ms); measures ``cfg``'s schedule for
    whatever is missing."""
    cal = await bm.calibration(iii_sdk)
    sample = bm.pooled(iii_sdk.label, cal.median_ms, min_hw)
    missing = need - len(sample.values)
    if missing > 0:
        n = bm.gaps_for(cfg, missing, min_hw)
        async with scenario(iii_sdk, verdict) as s:
            verdict.schedule(f"drop, then answer every dial with 503; time {n} dials")
            outage = await bm.schedule_outage(s, cfg, n)
        bm.pool(iii_sdk.label, outage, f"{source} (own measurement)")
        sample = bm.pooled(iii_sdk.label, cal.median_ms, min_hw)
    verdict.evidence(**sample.evidence(), calibration=cal.evidence())
    return sample


def _envelope_result(sample: bm.JitterSample) -> stats.TestResult:
    """The envelope test on raw gaps (each against its own attempt's window with the measured
    tolerance): in normalised units the 50 ms late tolerance would be a different slack per gap."""
    out = sample.outside()
    return stats.TestResult(
        "envelope",
        len(sample.items),
        float(len(out)),
        bool(out),
        detail={"outside": [{"gap_ms": round(p.gap_ms, 3), "base_ms": p.base_ms} for p in out]},
    )


def _explain(results: list[stats.TestResult], sample: bm.JitterSample) -> str:
    lo, hi = sample.band
    why = {
        "envelope": "gaps outside base*[1-J, 1+J]: jitter too wide or shifted",
        "range": "the gaps cover too little of the band: no, one-sided or too narrow jitter",
        "ks": "the distribution of u is not uniform on the band",
        "chi2": "the histogram of u is not flat over the band",
    }
    return (
        "; ".join(f"{r.describe()} ({why[r.name]})" for r in results if r.reject)
        + f" [normalised band {lo:g}..{hi:g}]"
    )


@check(
    "jitter.band",
    title="Normalised reconnect gaps cover the band [1-J, 1+J] (envelope + sample-range test)",
    contract=JITTER,
)
async def test_band(iii_sdk, verdict):
    sample = await _sample(
        iii_sdk, verdict, GATE_N, bm.MIN_HALF_WIDTH_MS, bm.CAPPED_CFG, "jitter.band"
    )
    lo, hi = sample.band
    results = [_envelope_result(sample), stats.range_test(sample.values, lo, hi, stats.GATE_ALPHA)]
    verdict.evidence(tests=[r.as_evidence() for r in results])
    assert not any(r.reject for r in results), _explain(results, sample)


@check(
    "jitter.distribution",
    title="Normalised reconnect gaps are uniform on [1-J, 1+J] (KS and chi-square, Holm)",
    contract=JITTER,
    nightly=True,
)
async def test_distribution(iii_sdk, verdict):
    sample = await _sample(
        iii_sdk,
        verdict,
        NIGHTLY_N,
        bm.NIGHTLY_MIN_HALF_WIDTH_MS,
        bm.WIDE_CFG,
        "jitter.distribution",
    )
    lo, hi = sample.band
    results = [
        _envelope_result(sample),
        stats.range_test(sample.values, lo, hi, stats.GATE_ALPHA),
        *stats.nightly_uniformity(sample.values, lo, hi),
    ]
    verdict.evidence(tests=[r.as_evidence() for r in results])
    assert not any(r.reject for r in results), _explain(results, sample)


# --- thundering herd -------------------------------------------------------------------------------

HERD_CFG = {
    "initial_delay_ms": 400,
    "backoff_multiplier": 2.0,
    "max_delay_ms": 3200,
    "jitter_factor": 0.5,
}
HERD_ALPHA = 0.001


def _first_dial_ms(engine: Any, conn_id: int, drop_ns: int) -> float:
    req = next(e for e in engine.transcript.events if e.kind == HTTP_REQUEST and e.conn == conn_id)
    return (req.t_ns - drop_ns) / 1e6


@check(
    "jitter.herd",
    title="Workers dropped at once do not reconnect in lockstep",
    contract=JITTER,
)
async def test_herd(iii_sdk, verdict):
    """With first delays uniform on base*[1-J, 1+J], the spread (max - min) of n workers'
    first reconnects is width * Beta(n-1, 2); without jitter it is the dial overhead's spread, a
    few ms. Fails below the 0.1 % quantile of that law."""
    n = 6 if _nightly() else 4
    cfg = bm.Backoff.of(HERD_CFG)
    env = cfg.envelope(0)
    async with scenario(iii_sdk, verdict) as s:
        eng = s.engine
        drvs = await asyncio.gather(*(s.worker(reconnection=HERD_CFG) for _ in range(n)))
        conns = [await s.connection(d) for d in drvs]
        verdict.schedule(f"{n} workers connected; drop all at once (abort); accept reconnects")
        drops = [bm.drop(eng, c) for c in conns]
        timeout = (env.hi_ms + bm.TOL_LATE_MS) / 1000 + 5.0
        new = await asyncio.gather(
            *(s.reconnected(d, c, timeout=timeout) for d, c in zip(drvs, conns, strict=True))
        )
        first = [_first_dial_ms(eng, c.id, t) for c, t in zip(new, drops, strict=True)]
    gaps = [
        bm.Gap(0, ms, env, "abort, then accepted", c.id, anchor="drop")
        for ms, c in zip(first, new, strict=True)
    ]
    width = env.hi_ms - env.lo_ms
    spread = max(first) - min(first)
    threshold = stats.range_quantile(HERD_ALPHA, n) * width
    verdict.evidence(
        config=cfg.__dict__,
        workers=n,
        first_reconnect_ms=[round(x, 3) for x in first],
        spread_ms=round(spread, 3),
        threshold_ms=round(threshold, 3),
        expected_spread_ms=round(width * (n - 1) / (n + 1), 3),
        drop_skew_ms=round((max(drops) - min(drops)) / 1e6, 3),
        gaps=[g.evidence() for g in gaps],
        normalised=[round(x / env.base_ms, 5) for x in first],
        band=[1 - cfg.jitter_factor, 1 + cfg.jitter_factor],
    )
    assert spread >= threshold, (
        f"{n} workers dropped together reconnected within {spread:.1f} ms of each other "
        f"({[round(x, 1) for x in first]} ms after the drop); with jitter {cfg.jitter_factor} "
        f"on a {env.base_ms:.0f} ms base the spread should be ~{width * (n - 1) / (n + 1):.0f} ms "
        f"and below {threshold:.1f} ms only 0.1 % of the time: they reconnect in lockstep"
    )
    bad = [g for g in gaps if not g.ok]
    assert not bad, "first reconnect outside the backoff envelope: " + "; ".join(
        g.describe() for g in bad
    )
