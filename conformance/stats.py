"""Statistics of reconnect gaps: backoff envelopes, normalisation, uniformity tests.

Pure Python on purpose: the gate runs the envelope and sample-range tests without scipy.
The nightly KS p-value uses ``scipy.stats.kstwo`` when scipy (the optional ``stats`` extra) is
installed and an asymptotic formula otherwise; chi-square is exact either way.

Model (iii-protocol.md §7.1, anchors.md §3.4): attempt ``n`` (0-based, per outage) waits
``delay = base_n * (1 + J * U(-1, 1))`` with ``base_n = min(initial * multiplier**n, max)``,
so ``u = delay / base_n`` is uniform on the band ``[1 - J, 1 + J]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# --- backoff model ------------------------------------------------------------------------------


def backoff_base(initial: float, multiplier: float, max_delay: float, attempt: int) -> float:
    """The nominal (jitter-free) delay of 0-based ``attempt``: the cap applies before jitter."""
    return min(initial * multiplier**attempt, max_delay)


@dataclass(frozen=True)
class Envelope:
    """Where the delay of one attempt may fall: ``base * [1 - J, 1 + J]``, no tolerance."""

    attempt: int
    base_ms: float
    lo_ms: float
    hi_ms: float

    def holds(self, gap_ms: float, early_ms: float, late_ms: float) -> bool:
        return self.lo_ms - early_ms <= gap_ms <= self.hi_ms + late_ms


def backoff_envelope(
    initial: float, multiplier: float, max_delay: float, jitter: float, attempt: int
) -> Envelope:
    base = backoff_base(initial, multiplier, max_delay, attempt)
    return Envelope(attempt, base, base * (1 - jitter), base * (1 + jitter))


def normalise(
    gaps_ms: Sequence[float], bases_ms: Sequence[float], overhead_ms: float = 0.0
) -> list[float]:
    """``u = (gap - overhead) / base``: uniform on ``[1 - J, 1 + J]`` for a conforming SDK."""
    return [(g - overhead_ms) / b for g, b in zip(gaps_ms, bases_ms, strict=True)]


def rescale(u: float, jitter: float, ref_jitter: float) -> float:
    """Map ``u`` from the band of ``jitter`` to the band of ``ref_jitter`` (affine, so range,
    KS and chi-square statistics are unchanged); lets gaps of different configs be pooled."""
    return 1.0 + (u - 1.0) * ref_jitter / jitter


# --- test results -------------------------------------------------------------------------------


@dataclass
class TestResult:
    """One statistical test on a sample against the uniform band ``[lo, hi]``."""

    name: str
    n: int
    statistic: float
    reject: bool
    p_value: float | None = None
    critical: float | None = None
    alpha: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    __test__ = False  # not a pytest class

    def as_evidence(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "p_value", "critical"):
            if isinstance(d[k], float):
                d[k] = round(d[k], 6)
        return d

    def describe(self) -> str:
        crit = f", critical {self.critical:.4g}" if self.critical is not None else ""
        p = f", p={self.p_value:.3g}" if self.p_value is not None else ""
        verdict = "REJECT" if self.reject else "ok"
        return f"{self.name}: n={self.n}, statistic {self.statistic:.4g}{crit}{p} -> {verdict}"


def envelope_test(
    values: Sequence[float], lo: float, hi: float, slack_lo: float = 0.0, slack_hi: float = 0.0
) -> TestResult:
    """Every value inside ``[lo - slack_lo, hi + slack_hi]``: catches jitter that is too wide or
    shifted. Not random under the null (a uniform on the band never leaves it)."""
    outside = [
        (i, round(v, 6)) for i, v in enumerate(values) if not lo - slack_lo <= v <= hi + slack_hi
    ]
    return TestResult(
        "envelope",
        len(values),
        float(len(outside)),
        bool(outside),
        detail={"outside": outside, "band": [lo - slack_lo, hi + slack_hi]},
    )


# --- sample range: range / width ~ Beta(n - 1, 2) under U[lo, hi] -------------------------------


def range_cdf(x: float, n: int) -> float:
    """CDF of Beta(n-1, 2), the law of (max - min) / width of n uniforms (closed form)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    return n * x ** (n - 1) - (n - 1) * x**n


def range_quantile(q: float, n: int) -> float:
    """Inverse of :func:`range_cdf` by bisection (monotone on [0, 1])."""
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if range_cdf(mid, n) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def range_test(values: Sequence[float], lo: float, hi: float, alpha: float = 0.01) -> TestResult:
    """Reject when the sample spans too little of the band: no jitter, one-sided jitter and
    jitter narrower than documented all shrink the range (anchors.md §3.4: ~100 % power
    against half-width jitter at n=10, ~alpha false positives)."""
    n = len(values)
    if n < 2 or hi <= lo:
        return TestResult("range", n, 0.0, False, detail={"skipped": "need n >= 2"})
    r = (max(values) - min(values)) / (hi - lo)
    crit = range_quantile(alpha, n)
    return TestResult(
        "range",
        n,
        r,
        r < crit,
        p_value=range_cdf(r, n),
        critical=crit,
        alpha=alpha,
        detail={"expected_mean": (n - 1) / (n + 1)},
    )


# --- Kolmogorov-Smirnov against U[lo, hi] -------------------------------------------------------


def ks_statistic(values: Sequence[float], lo: float, hi: float) -> float:
    """Two-sided one-sample KS distance to U[lo, hi]."""
    xs = sorted(values)
    n = len(xs)
    d = 0.0
    for i, x in enumerate(xs):
        f = min(1.0, max(0.0, (x - lo) / (hi - lo)))
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def kolmogorov_sf(d: float, n: int) -> float:
    """P(D_n >= d): exact via scipy when installed, else Stephens' asymptotic approximation
    (Kolmogorov series at ``(sqrt(n) + 0.12 + 0.11/sqrt(n)) * d``; within a few % for n >= 35)."""
    try:
        from scipy.stats import kstwo
    except ImportError:
        pass
    else:
        return float(kstwo.sf(d, n))
    rn = math.sqrt(n)
    lam = (rn + 0.12 + 0.11 / rn) * d
    if lam < 0.2:
        return 1.0
    s = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, 2 * s))


def ks_test(values: Sequence[float], lo: float, hi: float, alpha: float = 0.001) -> TestResult:
    d = ks_statistic(values, lo, hi)
    p = kolmogorov_sf(d, len(values))
    return TestResult("ks", len(values), d, p < alpha, p_value=p, alpha=alpha)


# --- chi-square goodness of fit with equal-width bins -------------------------------------------


def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) (series / continued fraction)."""
    if x <= 0:
        return 1.0
    lg = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - lg))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - lg) * h


def chi2_sf(x: float, dof: int) -> float:
    """P(chi2_dof >= x)."""
    return _gamma_q(dof / 2, x / 2)


def chi2_test(
    values: Sequence[float], lo: float, hi: float, alpha: float = 0.001, bins: int | None = None
) -> TestResult:
    """Equal-width bins over the band (values outside go to the edge bins: the envelope test
    reports them); at least 5 expected per bin."""
    n = len(values)
    k = bins or max(2, min(10, n // 5))
    counts = [0] * k
    for v in values:
        idx = int((v - lo) / (hi - lo) * k)
        counts[min(k - 1, max(0, idx))] += 1
    expected = n / k
    stat = sum((c - expected) ** 2 / expected for c in counts)
    p = chi2_sf(stat, k - 1)
    return TestResult(
        "chi2", n, stat, p < alpha, p_value=p, alpha=alpha, detail={"bins": k, "counts": counts}
    )


def holm(results: Sequence[TestResult], alpha: float) -> list[TestResult]:
    """Holm step-down over tests with p-values: sets ``reject`` and ``alpha`` (the per-test
    level used) so the family-wise error stays at ``alpha``."""
    order = sorted(range(len(results)), key=lambda i: results[i].p_value or 0.0)
    m = len(results)
    still = True
    for rank, i in enumerate(order):
        level = alpha / (m - rank)
        r = results[i]
        r.alpha = level
        still = still and (r.p_value or 0.0) < level
        r.reject = still
    return list(results)


# --- the two profiles ---------------------------------------------------------------------------

GATE_ALPHA = 0.001
NIGHTLY_ALPHA = 0.001


def gate_uniformity(
    values: Sequence[float],
    lo: float,
    hi: float,
    *,
    slack_lo: float = 0.0,
    slack_hi: float = 0.0,
    alpha: float = GATE_ALPHA,
) -> list[TestResult]:
    """Envelope + sample-range test: small n, no scipy, catches no / one-sided / too narrow
    (range) and too wide (envelope) jitter."""
    return [envelope_test(values, lo, hi, slack_lo, slack_hi), range_test(values, lo, hi, alpha)]


def nightly_uniformity(
    values: Sequence[float], lo: float, hi: float, *, alpha: float = NIGHTLY_ALPHA
) -> list[TestResult]:
    """KS and chi-square on a pooled sample (n >= 50), Holm-corrected between the two."""
    return holm([ks_test(values, lo, hi, alpha), chi2_test(values, lo, hi, alpha)], alpha)
