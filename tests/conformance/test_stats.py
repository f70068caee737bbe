"""The pure statistics behind backoff.* and jitter.* (conformance/stats.py).

Synthetic gap samples with fixed seeds show what the gate (envelope + sample range, n=25,
alpha 0.001) and nightly (KS + chi-square, n=60, alpha 0.001, Holm) tests do: a conforming
U[1-J, 1+J] passes at the documented false-positive rate, and each faulty jitter -- none,
one-sided, too narrow, too wide -- is rejected.
"""

from __future__ import annotations

import builtins
import math
import random
from collections.abc import Callable

import pytest

from conformance import backoff_measure as bm
from conformance import stats
from reports.plots import evidence_plots

J = 0.3
LO, HI = 1 - J, 1 + J
GATE_N = 25
#: Overheads (gap - base, ms) measured by backoff.no_jitter and the calibration probes, both
#: SDKs, idle and CPU-loaded: the noise a real sample carries after the median is subtracted.
MEASURED_OVERHEAD_MS = (
    4.27, 8.63, 2.42, 2.86, 6.28, 2.66, 14.47, 2.64, 5.25, 4.40, 11.79, 4.14, 11.24, 3.61,
    2.09, 5.83, 2.84, 2.68, 8.04, 10.22, 3.61, 3.78, 3.91, 2.46, 7.54, 7.88, 11.19, 10.23,
    4.65, 4.60, 2.80, 5.48, 3.78, 3.93, 4.72, 6.36, 1.50, 3.90, 15.80, 1.40, 2.60, 4.90,
    1.60, 2.90, 6.90, 2.10, 3.80, 15.90, 0.90, 7.10, 11.90,
)  # fmt: skip
NIGHTLY_N = 60

Sampler = Callable[[random.Random, int], list[float]]


def uniform(lo: float, hi: float) -> Sampler:
    return lambda rng, n: [rng.uniform(lo, hi) for _ in range(n)]


def faulty(j: float) -> dict[str, Sampler]:
    return {
        "no jitter": lambda rng, n: [1.0] * n,
        "no jitter + 1% noise": lambda rng, n: [1 + abs(rng.gauss(0, 0.01)) for _ in range(n)],
        "one-sided (1 + J*U(0,1))": uniform(1.0, 1 + j),
        "one-sided (1 - J*U(0,1))": uniform(1 - j, 1.0),
        "too narrow (J/2)": uniform(1 - j / 2, 1 + j / 2),
        "too wide (2J)": uniform(1 - 2 * j, 1 + 2 * j),
    }


CONFORMING = uniform(LO, HI)
FAULTY = faulty(J)


def gate_rejects(values: list[float]) -> bool:
    return any(r.reject for r in stats.gate_uniformity(values, LO, HI))


def nightly_rejects(values: list[float]) -> bool:
    return any(r.reject for r in stats.nightly_uniformity(values, LO, HI))


def rejection_rate(sampler: Sampler, n: int, reps: int, rejects, seed: int = 1) -> float:
    rng = random.Random(seed)
    return sum(rejects(sampler(rng, n)) for _ in range(reps)) / reps


# --- backoff model ---------------------------------------------------------------------------------


def test_default_schedule_caps_before_jitter():
    """1000 x 2 capped at 30000, J 0.3: windows 700-1300, 1400-2600, ..., 21000-39000 ms."""
    envs = [stats.backoff_envelope(1000, 2, 30000, 0.3, n) for n in range(7)]
    assert [e.base_ms for e in envs] == [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert (envs[0].lo_ms, envs[0].hi_ms) == pytest.approx((700, 1300))
    assert (envs[1].lo_ms, envs[1].hi_ms) == pytest.approx((1400, 2600))
    assert (envs[6].lo_ms, envs[6].hi_ms) == pytest.approx((21000, 39000))


def test_envelope_tolerance_is_asymmetric():
    env = stats.backoff_envelope(100, 2, 800, 0.3, 0)
    assert env.holds(70 - 2, early_ms=2, late_ms=50)
    assert not env.holds(70 - 2.1, early_ms=2, late_ms=50)
    assert env.holds(130 + 50, early_ms=2, late_ms=50)
    assert not env.holds(130 + 50.1, early_ms=2, late_ms=50)


def test_backoff_defaults_and_gap_budget():
    cfg = bm.Backoff.of({"initial_delay_ms": 100, "max_delay_ms": 400, "jitter_factor": 0})
    assert (cfg.backoff_multiplier, cfg.max_retries) == (2.0, -1)
    assert cfg.gaps_within(700, lo=1, hi=10) == 3  # 100 + 200 + 400
    assert cfg.gaps_within(50, lo=2, hi=10) == 2


def test_gaps_for_skips_gaps_with_a_narrow_band():
    # CAPPED_CFG: base 50 (half-width 25 ms) then 100 (50 ms): the first gap is not usable.
    assert bm.gaps_for(bm.CAPPED_CFG, 15, bm.MIN_HALF_WIDTH_MS) == 16
    # WIDE_CFG: every gap has a 120 ms half-width, but gap 0 is drop-anchored (not pooled).
    assert bm.gaps_for(bm.WIDE_CFG, 60, bm.NIGHTLY_MIN_HALF_WIDTH_MS) == 61
    with pytest.raises(ValueError):
        bm.gaps_for({"initial_delay_ms": 50, "max_delay_ms": 50, "jitter_factor": 0.1}, 1, 30)


def test_pool_keeps_wide_bands_and_rescales(monkeypatch):
    monkeypatch.setattr(bm, "POOL", {})
    cfg = bm.Backoff.of({"initial_delay_ms": 100, "max_delay_ms": 400, "jitter_factor": 0.25})
    anchor = 0
    gaps = [bm.Gap(k, g, cfg.envelope(k), "http503", k) for k, g in enumerate([105, 255, 305])]
    gaps.append(bm.Gap(3, 405, cfg.envelope(3), "http503", 3, anchor="drop"))
    bm.pool("sdk", bm.Outage(cfg, "http503", anchor, [], gaps), "t")
    # half-widths 25 (too narrow), 50, 100 ms, and a drop-anchored gap (not pooled)
    sample = bm.pooled("sdk", overhead_ms=5.0)
    assert sample.values == pytest.approx([1 + 0.25 * 0.5 / 0.25, 1 - 0.25 * 0.5 / 0.25])
    assert len(bm.pooled("sdk", 5.0, min_half_width_ms=60).values) == 1
    assert bm.pooled("other", 5.0).values == []


def test_pending_gap_and_calibration_ignore_a_broken_schedule():
    cfg = bm.Backoff.of(bm.CALIBRATION_CFG)
    waited = bm.Gap(3, 1000.0, cfg.envelope(3), "http503", 0, anchor="pending")
    assert not waited.ok and "no dial for 1000 ms" in waited.describe()
    assert bm.Gap(3, 100.0, cfg.envelope(3), "http503", 0, anchor="pending").ok
    # A schedule that stops growing (gaps 50, 50, 50...) has no usable overhead samples.
    gaps = [bm.Gap(k, 53.0, cfg.envelope(k), "http503", k, anchor="dial") for k in range(1, 5)]
    gaps.insert(0, bm.Gap(0, 60.0, cfg.envelope(0), "http503", 0, anchor="drop"))
    good = [bm.Gap(1, 104.0, cfg.envelope(1), "http503", 1)]
    cal = bm.record_calibration("broken", bm.Outage(cfg, "http503", 0, [], gaps + good))
    assert cal.usable_ms == [4.0] and cal.median_ms == 4.0
    assert len(cal.overhead_ms) == 5  # the drop-anchored gap is not an overhead sample
    assert bm.Calibration([], []).median_ms == 0.0
    bm.CALIBRATIONS.pop("broken")


def test_normalise_and_rescale():
    assert stats.normalise([110, 230], [100, 200], overhead_ms=10) == pytest.approx([1.0, 1.1])
    assert stats.rescale(1.15, 0.3, 0.5) == pytest.approx(1.25)
    rng = random.Random(3)
    u = [rng.uniform(0.85, 1.15) for _ in range(20)]
    v = [stats.rescale(x, 0.15, 0.5) for x in u]
    a, b = stats.range_test(u, 0.85, 1.15), stats.range_test(v, 0.5, 1.5)
    assert a.statistic == pytest.approx(b.statistic)
    assert stats.ks_statistic(u, 0.85, 1.15) == pytest.approx(stats.ks_statistic(v, 0.5, 1.5))


def test_feasible_attempts_of_a_hidden_schedule():
    """jitter 0, 100 x 2: dials at 100, 300, 700, 1500 ms after the drop (+ overhead)."""
    cfg = bm.Backoff.of({"initial_delay_ms": 100, "max_delay_ms": 3200, "jitter_factor": 0})
    # Back at 500 ms (dials 0, 1 unseen): the next dial is #2 at ~700 ms.
    assert bm.feasible_attempts(cfg, first_ms=703, relisten_ms=500) == [2]
    # A dial 150 ms after the re-listen at 500 ms fits no attempt (the SDK is off schedule).
    assert bm.feasible_attempts(cfg, first_ms=650, relisten_ms=500) == []
    # A dial long after every delay would have ended: the SDK stopped retrying for a while.
    assert bm.feasible_attempts(cfg, first_ms=2600, relisten_ms=500) == []


# --- distributions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "q"), [(10, 0.496), (20, 0.711), (30, 0.798)])
def test_range_quantiles_match_anchors(n, q):
    """anchors.md §3.4: 1 % quantiles of range/width ~ Beta(n-1, 2)."""
    assert stats.range_quantile(0.01, n) == pytest.approx(q, abs=5e-4)


def test_range_quantile_inverts_cdf_and_matches_scipy():
    for n in (3, 4, 6, 10, 15, 60):
        for q in (0.001, 0.01, 0.5):
            assert stats.range_cdf(stats.range_quantile(q, n), n) == pytest.approx(q, rel=1e-9)
    beta = pytest.importorskip("scipy.stats").beta
    for n in (4, 15, 60):
        assert stats.range_quantile(0.001, n) == pytest.approx(beta.ppf(0.001, n - 1, 2), rel=1e-6)


def test_chi2_sf_matches_known_values_and_scipy():
    assert stats.chi2_sf(3.841459, 1) == pytest.approx(0.05, rel=1e-5)
    assert stats.chi2_sf(0.0, 4) == 1.0
    chi2 = pytest.importorskip("scipy.stats").chi2
    for x, k in [(0.5, 1), (3.2, 4), (15, 9), (30, 9), (100, 49), (2.0, 9)]:
        assert stats.chi2_sf(x, k) == pytest.approx(chi2.sf(x, k), rel=1e-9)


def test_kolmogorov_fallback_without_scipy(monkeypatch):
    """Without scipy (the gate's install), Stephens' formula stays within 2 % of the exact
    p-value where the nightly uses it (n >= 50, p around alpha)."""
    kstwo = pytest.importorskip("scipy.stats").kstwo
    real_import = builtins.__import__

    def no_scipy(name, *args, **kw):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    for d, n in [(0.2, 50), (0.27, 50), (0.15, 100), (0.25, 60)]:
        assert stats.kolmogorov_sf(d, n) == pytest.approx(kstwo.sf(d, n), rel=0.02)


def test_holm_step_down():
    rs = [
        stats.TestResult(name, 10, 0.0, False, p_value=p)
        for name, p in [("a", 0.0004), ("b", 0.0009), ("c", 0.02)]
    ]
    stats.holm(rs, alpha=0.001 * 3)
    assert [r.reject for r in rs] == [True, True, False]
    assert [r.alpha for r in rs] == pytest.approx([0.001, 0.0015, 0.003])
    # Step-down stops at the first non-rejection, even if a later p would pass its level.
    rs = [stats.TestResult(n, 10, 0.0, False, p_value=p) for n, p in [("a", 0.02), ("b", 0.02)]]
    stats.holm(rs, alpha=0.03)
    assert [r.reject for r in rs] == [False, False]


# --- conforming jitter passes at the documented rate ----------------------------------------------


def test_gate_false_positive_rate():
    """Envelope never rejects a conforming sample; the range test at alpha 0.001 does ~0.1 %."""
    rate = rejection_rate(CONFORMING, GATE_N, 4000, gate_rejects)
    assert rate <= 0.003  # expected 0.001: 4 of 4000, Poisson tail at 12 < 1e-3


def test_range_test_at_anchor_settings_has_one_percent_false_positives():
    rate = rejection_rate(
        CONFORMING, 10, 4000, lambda v: stats.range_test(v, LO, HI, alpha=0.01).reject
    )
    assert 0.005 <= rate <= 0.016


def test_nightly_false_positive_rate():
    rate = rejection_rate(CONFORMING, NIGHTLY_N, 1500, nightly_rejects)
    assert rate <= 0.004  # family-wise alpha 0.001


def test_measured_overhead_noise_does_not_raise_false_positives():
    """Residual overhead after subtracting the median (sd ~3 ms on a 100 ms base) is noise of
    ~3 % of the base: the range only grows, KS/chi-square stay at their level."""

    def noisy(rng, n):
        return [rng.uniform(LO, HI) + rng.gauss(0, 0.03) for _ in range(n)]

    gate = rejection_rate(noisy, GATE_N, 2000, lambda v: stats.range_test(v, LO, HI, 0.001).reject)
    assert gate <= 0.003
    assert rejection_rate(noisy, NIGHTLY_N, 1000, nightly_rejects) <= 0.01


# --- faulty jitter is rejected ------------------------------------------------------------------------

# jitter.band exactly: CAPPED_CFG gaps (base 100 ms, J 0.5), the measured overhead minus its
# median as noise, and the envelope with the check's tolerances (2 ms early, 50 ms late).
BAND_BASE_MS, BAND_J = 100.0, 0.5
MEDIAN_OVERHEAD_MS = sorted(MEASURED_OVERHEAD_MS)[len(MEASURED_OVERHEAD_MS) // 2]


def with_measured_noise(sampler: Sampler) -> Sampler:
    def sample(rng: random.Random, n: int) -> list[float]:
        return [
            u + (rng.choice(MEASURED_OVERHEAD_MS) - MEDIAN_OVERHEAD_MS) / BAND_BASE_MS
            for u in sampler(rng, n)
        ]

    return sample


def band_rejects(values: list[float]) -> bool:
    lo, hi = 1 - BAND_J, 1 + BAND_J
    slack_lo = (bm.TOL_EARLY_MS + MEDIAN_OVERHEAD_MS) / BAND_BASE_MS
    slack_hi = (bm.TOL_LATE_MS - MEDIAN_OVERHEAD_MS) / BAND_BASE_MS
    return any(
        r.reject
        for r in stats.gate_uniformity(values, lo, hi, slack_lo=slack_lo, slack_hi=slack_hi)
    )


@pytest.mark.parametrize(
    "fault", ["no jitter", "one-sided (1 + J*U(0,1))", "too narrow (J/2)", "too wide (2J)"]
)
def test_band_check_rejects_faulty_jitter_through_measured_noise(fault):
    """Why jitter.band pools n=25: overhead noise widens the range of a one-sided or half-width
    sample (at most half the band) past the n=15 critical value (0.528) in ~15 % of samples;
    the n=25 critical value (0.686) keeps every one rejected."""
    noisy = with_measured_noise(faulty(BAND_J)[fault])
    assert rejection_rate(noisy, GATE_N, 4000, band_rejects) >= 0.999
    if fault in ("one-sided (1 + J*U(0,1))", "too narrow (J/2)"):
        assert rejection_rate(noisy, 15, 4000, band_rejects) < 0.95


def test_band_check_false_positive_rate_with_measured_noise():
    conforming = with_measured_noise(uniform(1 - BAND_J, 1 + BAND_J))
    assert rejection_rate(conforming, GATE_N, 4000, band_rejects) <= 0.003


@pytest.mark.parametrize("fault", sorted(FAULTY))
def test_gate_rejects_faulty_jitter(fault):
    assert rejection_rate(FAULTY[fault], GATE_N, 1000, gate_rejects) >= 0.99


@pytest.mark.parametrize("fault", sorted(FAULTY))
def test_nightly_rejects_faulty_jitter(fault):
    assert rejection_rate(FAULTY[fault], NIGHTLY_N, 300, nightly_rejects) >= 0.99


@pytest.mark.parametrize(
    ("fault", "test"),
    [
        ("no jitter", "range"),
        ("one-sided (1 + J*U(0,1))", "range"),
        ("too narrow (J/2)", "range"),
        ("too wide (2J)", "envelope"),
    ],
)
def test_each_fault_is_caught_by_the_test_meant_for_it(fault, test):
    rng = random.Random(7)
    results = {r.name: r for r in stats.gate_uniformity(FAULTY[fault](rng, GATE_N), LO, HI)}
    assert results[test].reject, results[test].describe()


def test_envelope_slack():
    values = [0.69, 1.0, 1.32]
    assert stats.envelope_test(values, LO, HI).reject
    assert not stats.envelope_test(values, LO, HI, slack_lo=0.02, slack_hi=0.03).reject


def test_herd_threshold_separates_lockstep_from_jitter():
    """jitter.herd: 4 workers, base 400 ms, J 0.5 (width 400 ms): lockstep reconnects within
    10 ms fail; conforming first delays pass except ~0.1 %."""
    n, width = 4, 400.0
    threshold = stats.range_quantile(0.001, n) * width
    assert 10.0 < threshold < 40.0
    rng = random.Random(11)
    fails = sum(
        max(d) - min(d) < threshold
        for d in ([rng.uniform(200, 600) for _ in range(n)] for _ in range(4000))
    )
    assert fails / 4000 <= 0.003


# --- evidence renders ----------------------------------------------------------------------------------


def test_evidence_shapes_render_as_plots():
    cfg = bm.Backoff.of(bm.CAPPED_CFG)
    gaps = [bm.Gap(k, 100.0 + 10 * k, cfg.envelope(k), "http503", k + 1) for k in range(4)]
    gaps.append(bm.Gap(4, 400.0, cfg.envelope(4), "http503", 5))  # far outside
    sample = bm.JitterSample([0.6, 1.0, 1.4], [], 3.0)
    ev = {"gaps": [g.evidence() for g in gaps], **sample.evidence()}
    assert [g["ok"] for g in ev["gaps"]] == [True, True, True, True, False]
    plots = evidence_plots(ev)
    assert set(plots) == {"backoff", "jitter"}
    assert plots["backoff"].count('data-outside="true"') == 1
    assert "U[0.5, 1.5]" in plots["jitter"]
    assert math.isclose(ev["band"][0], 0.5)
