"""Dial gaps measured at the engine: the raw data of the ``backoff.`` and ``jitter.`` checks.

A *gap* is the time between the moment an SDK's retry timer can first have started and the
engine receiving its next upgrade request (``http_request``, a dial):

* the first gap of an outage starts at the drop (a transcript note written just before the
  engine drops the connection: the SDK cannot see the drop earlier);
* later gaps start at the previous refused dial's ``http_request``. The engine stamps the
  request, then answers it (503 / close), so the SDK's timer starts after that stamp. (The
  ``handshake`` event is stamped *after* the refusal bytes are written, so an SDK can react
  before it: anchoring there could make a gap look shorter than the SDK's delay.)

So ``gap = delay + overhead`` with overhead >= 0: the refusal round trip, the SDK's handling,
and the next TCP connect + request. See :data:`TOL_LATE_MS` for the measured overhead.

Module-level caches let checks of one run share measurements (the jitter checks pool gaps the
backoff checks measured); every check still works alone and measures what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance import stats
from conformance.scenario import Scenario, scenario
from fake_engine import Connection, FakeEngine, handshake
from fake_engine.transcript import HTTP_REQUEST, Event, WaitTimeout

# Tolerances around ``base * [1 - J, 1 + J]`` (iii-protocol.md §7.1).
#
# Early: the delay can only undershoot by Node's ``Math.floor`` (< 1 ms); timers do not fire
# early on CLOCK_MONOTONIC, and the anchor is a strict lower bound on the timer start (above).
# 2 ms covers the floor plus timestamp rounding.
TOL_EARLY_MS = 2.0
# Late: overhead measured with jitter_factor 0 (backoff.no_jitter computes it every run; see its
# evidence) on loopback: 0.3-16 ms over 120 gaps of both SDKs, including runs with two
# CPU-burning processes on a 2-CPU box; sdk-behaviour.md §7 measured 4-25 ms. 50 ms = 2x the worst
# published figure, so a busy CI box does not turn scheduling noise into a FAILED.
TOL_LATE_MS = 50.0
# SDKs give up on a stalled WebSocket open after 10 s (iii-protocol.md §6): Node
# WS_HANDSHAKE_TIMEOUT_MS, Python websockets open_timeout. The timer starts at the TCP connect,
# just before the engine stamps the request: allow 5 ms more on the early side.
HANDSHAKE_TIMEOUT_MS = 10_000.0
STALL_EARLY_MS = 5.0

DEFAULTS = {  # seed-external-workers.md "Reconnection Config"
    "initial_delay_ms": 1000,
    "max_delay_ms": 30000,
    "backoff_multiplier": 2.0,
    "jitter_factor": 0.3,
    "max_retries": -1,
}


@dataclass(frozen=True)
class Backoff:
    """A reconnection config with the SDK defaults filled in."""

    initial_delay_ms: float
    max_delay_ms: float
    backoff_multiplier: float
    jitter_factor: float
    max_retries: int = -1

    @classmethod
    def of(cls, cfg: Mapping[str, Any] | None) -> Backoff:
        return cls(**{**DEFAULTS, **(cfg or {})})

    def envelope(self, attempt: int) -> stats.Envelope:
        return stats.backoff_envelope(
            self.initial_delay_ms,
            self.backoff_multiplier,
            self.max_delay_ms,
            self.jitter_factor,
            attempt,
        )

    def worst_wait_ms(self, attempts: range) -> float:
        """Upper bound (with tolerance) on the time ``attempts`` take."""
        return sum(self.envelope(k).hi_ms + TOL_LATE_MS for k in attempts)

    def gaps_within(self, budget_ms: float, lo: int = 3, hi: int = 6) -> int:
        """How many gaps fit in ``budget_ms`` of nominal waiting (clamped to [lo, hi])."""
        total, n = 0.0, 0
        while n < hi and total + self.envelope(n).base_ms <= budget_ms:
            total += self.envelope(n).base_ms
            n += 1
        return max(lo, n)


@dataclass
class Gap:
    """One measured gap against the envelope of its attempt."""

    attempt: int  # 0-based index in the outage (the SDK's retry counter)
    gap_ms: float
    env: stats.Envelope
    refusal: str
    conn: int
    offset_ms: float = 0.0  # time known to precede the delay (a stalled open's 10 s)
    early_ms: float = TOL_EARLY_MS
    late_ms: float = TOL_LATE_MS
    # What the gap is measured from: "dial" (the previous refused dial: overhead = one refusal
    # round trip, 2-5 ms typical), "drop" (the SDK first has to notice the dead socket: up to
    # ~15 ms more, measured) or "pending" (no dial yet: the gap is a lower bound).
    anchor: str = "dial"

    @property
    def delay_ms(self) -> float:
        return self.gap_ms - self.offset_ms

    @property
    def ok(self) -> bool:
        if self.anchor == "pending":
            return self.delay_ms <= self.env.hi_ms + self.late_ms
        return self.env.holds(self.delay_ms, self.early_ms, self.late_ms)

    def evidence(self) -> dict[str, Any]:
        """Plot-ready (reports/plots.py): lo/hi are the accepted window incl. tolerance."""
        return {
            "attempt": self.attempt + 1,
            "gap_ms": round(self.delay_ms, 3),
            "lo_ms": round(self.env.lo_ms - self.early_ms, 3),
            "hi_ms": round(self.env.hi_ms + self.late_ms, 3),
            "base_ms": round(self.env.base_ms, 3),
            "band_ms": [round(self.env.lo_ms, 3), round(self.env.hi_ms, 3)],
            "refusal": self.refusal,
            "ok": self.ok,
            "anchor": self.anchor,
            **({"offset_ms": self.offset_ms} if self.offset_ms else {}),
        }

    def describe(self) -> str:
        off = f" after the {self.offset_ms:.0f} ms stall" if self.offset_ms else ""
        if self.anchor == "pending":
            return (
                f"attempt {self.attempt + 1}: no dial for {self.delay_ms:.0f} ms{off}, expected "
                f"within {self.env.hi_ms + self.late_ms:.0f} ms (base {self.env.base_ms:.1f})"
            )
        return (
            f"attempt {self.attempt + 1}: delay {self.delay_ms:.1f} ms{off}, expected "
            f"{self.env.lo_ms:.1f}..{self.env.hi_ms:.1f} ms (base {self.env.base_ms:.1f}, "
            f"tolerance -{self.early_ms:.0f}/+{self.late_ms:.0f} ms)"
        )


@dataclass
class Outage:
    """One outage: the drop, the dials the engine saw, and their gaps."""

    cfg: Backoff
    refusal: str
    drop_ns: int
    dials: list[Event]
    gaps: list[Gap] = field(default_factory=list)

    def violations(self) -> list[Gap]:
        return [g for g in self.gaps if not g.ok]

    def evidence(self) -> dict[str, Any]:
        return {
            "config": self.cfg.__dict__,
            "refusal": self.refusal,
            "gaps": [g.evidence() for g in self.gaps],
            "tolerance_ms": {"early": TOL_EARLY_MS, "late": TOL_LATE_MS},
        }


# --- transcript helpers ---------------------------------------------------------------------------


def dials(engine: FakeEngine, since: int = 0) -> list[Event]:
    """Upgrade requests on ``/`` (worker dials) at transcript index >= ``since``."""
    return [
        e
        for e in engine.transcript.events[since:]
        if e.kind == HTTP_REQUEST and e.detail.get("path", "").split("?")[0] == "/"
    ]


async def wait_dials(engine: FakeEngine, since: int, count: int, timeout: float) -> list[Event]:
    await engine.wait_until(
        lambda: len(dials(engine, since)) >= count,
        timeout,
        f"{count} reconnect dial(s) at the engine",
    )
    return dials(engine, since)[:count]


def drop(engine: FakeEngine, conn: Connection, how: str = "abort") -> int:
    """Note the instant, then drop the worker (abort: no close frame, so reconnecting does not
    depend on how an SDK treats a normal close, iii-hq/iii#2180). Returns the note's t_ns."""
    ev = engine.transcript.note(conn.id, "backoff_drop", how=how)
    engine.drop(conn, how)
    return ev.t_ns


def gaps_of(
    cfg: Backoff,
    anchor_ns: int,
    dial_events: list[Event],
    refusal: str,
    first_attempt: int = 0,
    offset_ms: float = 0.0,
    first_anchor: str = "drop",
) -> list[Gap]:
    """Gaps between ``anchor_ns`` and each dial, then dial to dial; ``offset_ms`` is known to
    precede every delay after the first (a stall's handshake timeout)."""
    out, prev = [], anchor_ns
    for k, d in enumerate(dial_events):
        n = first_attempt + k
        off = offset_ms if k else 0.0
        anchor = first_anchor if k == 0 else "dial"
        out.append(
            Gap(n, (d.t_ns - prev) / 1e6, cfg.envelope(n), refusal, d.conn, off, anchor=anchor)
        )
        prev = d.t_ns
    return out


def pending_gap(cfg: Backoff, attempt: int, since_ns: int, refusal: str) -> Gap:
    """The wait for a dial that has not come (yet): a lower bound on that attempt's delay."""
    waited = (time.monotonic_ns() - since_ns) / 1e6
    return Gap(attempt, waited, cfg.envelope(attempt), refusal, 0, anchor="pending")


def feasible_attempts(cfg: Backoff, first_ms: float, relisten_ms: float) -> list[int]:
    """Attempt indexes k the first dial seen after the re-listen can be.

    Dial k happens at the sum of k+1 delays (times from the drop, each delay in its envelope
    plus tolerance), dial k-1 must have happened before the re-listen (else the engine would
    have seen it), and the wait from the re-listen is at most one whole delay.
    """
    out, lo_sum, hi_sum = [], 0.0, 0.0
    for k in range(64):
        env = cfg.envelope(k)
        lo_k = lo_sum + env.lo_ms - TOL_EARLY_MS
        hi_k = hi_sum + env.hi_ms + TOL_LATE_MS
        if (
            lo_k <= first_ms <= hi_k
            and lo_sum <= relisten_ms
            and first_ms - relisten_ms <= env.hi_ms + TOL_LATE_MS
        ):
            out.append(k)
        if lo_k > first_ms:
            break
        lo_sum, hi_sum = lo_k, hi_k
    return out


REFUSALS: dict[str, handshake.HandshakeMode] = {
    "http503": handshake.Refuse(503),
    "closed_before_upgrade": handshake.CloseBeforeUpgrade(),
}


async def start_worker(s: Scenario, cfg: Mapping[str, Any] | None) -> tuple[Any, Connection]:
    drv = await s.worker(reconnection=cfg)
    return drv, await s.connection(drv)


async def refused_outage(
    s: Scenario, drv: Any, conn: Connection, cfg: Backoff, refusal: str, n_gaps: int
) -> Outage:
    """Refuse every dial with ``refusal``, drop the worker, and time its next ``n_gaps`` dials.

    Waits as long as the schedule allows (+2 s); an SDK that stops dialling or waits too long
    gets a ``pending`` gap (no dial for longer than its envelope) instead of a bare timeout.
    """
    eng = s.engine
    since = len(eng.transcript.events)
    eng.set_handshake(REFUSALS[refusal])
    t0 = drop(eng, conn)
    timeout = cfg.worst_wait_ms(range(n_gaps)) / 1000 + 2.0
    with contextlib.suppress(WaitTimeout):
        await wait_dials(eng, since, n_gaps, timeout)
    got = dials(eng, since)[:n_gaps]
    gaps = gaps_of(cfg, t0, got, refusal)
    if len(got) < n_gaps:
        gaps.append(pending_gap(cfg, len(got), got[-1].t_ns if got else t0, refusal))
    return Outage(cfg, refusal, t0, got, gaps)


# --- calibration (jitter_factor 0) and the pooled jitter sample -------------------------------------

#: jitter 0: every gap is its base plus overhead, so gap - base measures the overhead.
CALIBRATION_CFG = {
    "initial_delay_ms": 50,
    "backoff_multiplier": 2.0,
    "max_delay_ms": 200,
    "jitter_factor": 0.0,
}
CALIBRATION_GAPS = 7  # the first (drop-anchored) gap is not an overhead sample


@dataclass
class Calibration:
    """Overhead (gap - base) of dial-anchored gaps of a jitter-free schedule. The median uses
    only gaps inside their envelope: a broken schedule must not skew the jitter normalisation."""

    overhead_ms: list[float]
    usable_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.usable_ms) if self.usable_ms else 0.0

    def evidence(self) -> dict[str, Any]:
        o = self.overhead_ms or [0.0]
        return {
            "overhead_ms": [round(x, 3) for x in self.overhead_ms],
            "overhead_median_ms": round(self.median_ms, 3),
            "overhead_min_ms": round(min(o), 3),
            "overhead_max_ms": round(max(o), 3),
        }


CALIBRATIONS: dict[str, Calibration] = {}


def record_calibration(sdk_label: str, outage: Outage) -> Calibration:
    measured = [g for g in outage.gaps if g.anchor == "dial"]
    cal = Calibration(
        [g.gap_ms - g.env.base_ms for g in measured],
        [g.gap_ms - g.env.base_ms for g in measured if g.ok],
    )
    CALIBRATIONS[sdk_label] = cal
    return cal


async def calibration_outage(s: Scenario) -> Outage:
    cfg = Backoff.of(CALIBRATION_CFG)
    drv, conn = await start_worker(s, CALIBRATION_CFG)
    return await refused_outage(s, drv, conn, cfg, "http503", CALIBRATION_GAPS)


async def calibration(sdk: Any) -> Calibration:
    """The SDK's measured overhead: cached, else measured in a scenario of its own."""
    if sdk.label not in CALIBRATIONS:
        async with scenario(sdk) as s:
            record_calibration(sdk.label, await calibration_outage(s))
    return CALIBRATIONS[sdk.label]


#: Jitter samples are pooled on one reference band; gaps of other jitter factors are rescaled
#: (affine: range, KS and chi-square statistics do not change).
REF_JITTER = 0.5
#: Pool only gaps whose jitter half-width J*base is at least this: the overhead noise (sd
#: 1-4 ms measured) then stays under ~10 % of the half-width. Simulated with the measured
#: overheads: the gate's range test keeps its 0.1 % false positives; KS + chi-square at n=80
#: rise from 0.1 % to 0.25 % at 30-40 ms and stay at ~0.13 % from 60 ms, so the nightly uses
#: only gaps with a half-width of 60 ms or more.
MIN_HALF_WIDTH_MS = 30.0
NIGHTLY_MIN_HALF_WIDTH_MS = 60.0


@dataclass(frozen=True)
class Pooled:
    gap_ms: float
    base_ms: float
    jitter: float
    source: str
    ok: bool  # inside its own envelope (with tolerance) when measured


POOL: dict[str, list[Pooled]] = {}


def pool(sdk_label: str, outage: Outage, source: str) -> None:
    """Add an outage's usable gaps to the SDK's jitter pool (raw gaps: overhead is subtracted
    when the pool is read, with whatever calibration exists then)."""
    j = outage.cfg.jitter_factor
    for g in outage.gaps:
        if (
            j > 0
            and j * g.env.base_ms >= MIN_HALF_WIDTH_MS
            and g.anchor == "dial"
            and not g.offset_ms
        ):
            POOL.setdefault(sdk_label, []).append(Pooled(g.gap_ms, g.env.base_ms, j, source, g.ok))


@dataclass
class JitterSample:
    """An SDK's pooled gaps, normalised and rescaled to the REF_JITTER band."""

    values: list[float]
    items: list[Pooled]
    overhead_ms: float

    @property
    def band(self) -> tuple[float, float]:
        return 1 - REF_JITTER, 1 + REF_JITTER

    def outside(self) -> list[Pooled]:
        return [p for p in self.items if not p.ok]

    def evidence(self) -> dict[str, Any]:
        return {
            "normalised": [round(v, 5) for v in self.values],
            "band": list(self.band),
            "n": len(self.values),
            "overhead_subtracted_ms": round(self.overhead_ms, 3),
            "sources": sorted({p.source for p in self.items}),
            "jitter_factors": sorted({p.jitter for p in self.items}),
            "pooling": f"u = (gap - overhead) / base, rescaled from each config's band "
            f"[1-J, 1+J] to [1-{REF_JITTER}, 1+{REF_JITTER}] (affine: tests unchanged)",
        }


def pooled(
    sdk_label: str, overhead_ms: float, min_half_width_ms: float = MIN_HALF_WIDTH_MS
) -> JitterSample:
    items = [p for p in POOL.get(sdk_label, []) if p.jitter * p.base_ms >= min_half_width_ms]
    values = [
        stats.rescale((p.gap_ms - overhead_ms) / p.base_ms, p.jitter, REF_JITTER) for p in items
    ]
    return JitterSample(values, items, overhead_ms)


#: Gaps with a large constant band: 50 ms, then capped at 100 ms with jitter 0.5 (half-width
#: 50 ms). Used by backoff.cap (capped gaps exceed max) and to top up the jitter pool.
CAPPED_CFG = {
    "initial_delay_ms": 50,
    "backoff_multiplier": 2.0,
    "max_delay_ms": 100,
    "jitter_factor": 0.5,
}


#: A constant 240 ms base with jitter 0.5 (half-width 120 ms): the nightly jitter sample.
WIDE_CFG = {
    "initial_delay_ms": 240,
    "backoff_multiplier": 2.0,
    "max_delay_ms": 240,
    "jitter_factor": 0.5,
}


async def schedule_outage(s: Scenario, cfg: Mapping[str, Any], n_gaps: int) -> Outage:
    """A fresh worker with ``cfg``, dropped, every dial refused with 503: ``n_gaps`` gaps."""
    drv, conn = await start_worker(s, cfg)
    return await refused_outage(s, drv, conn, Backoff.of(cfg), "http503", n_gaps)


async def capped_outage(s: Scenario, n_gaps: int) -> Outage:
    return await schedule_outage(s, CAPPED_CFG, n_gaps)


def gaps_for(cfg: Mapping[str, Any], usable: int, min_half_width_ms: float) -> int:
    """How many gaps of ``cfg``'s schedule give ``usable`` gaps with a wide enough band."""
    b, n, got = Backoff.of(cfg), 1, 0  # gap 0 is drop-anchored: never pooled
    while got < usable:
        got += b.jitter_factor * b.envelope(n).base_ms >= min_half_width_ms
        n += 1
        if n > 1000:
            raise ValueError(f"{dict(cfg)} never reaches a half-width of {min_half_width_ms} ms")
    return n


async def silence(engine: FakeEngine, since: int, count: int, window_s: float) -> list[Event]:
    """Wait ``window_s`` and return any dials beyond the first ``count`` since ``since``."""
    await asyncio.sleep(window_s)
    return dials(engine, since)[count:]
