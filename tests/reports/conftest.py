"""Shared sample data for the reports tests."""

from __future__ import annotations

import pytest

from reports.model import CheckResult, Verdict


def envelope_gaps(outside_attempts: tuple[int, ...] = (4,)) -> list[dict]:
    gaps = []
    for attempt in range(1, 7):
        base = min(1000 * 2 ** (attempt - 1), 30000)
        gap = base * (1.6 if attempt in outside_attempts else 1.05)
        gaps.append(
            {
                "attempt": attempt,
                "gap_ms": gap,
                "lo_ms": base * 0.7 - 100,
                "hi_ms": base * 1.3 + 100,
                "base_ms": base,
            }
        )
    return gaps


@pytest.fixture
def make_gaps():
    """``make_gaps(outside_attempts)`` -> gap records with those attempts outside."""
    return envelope_gaps


@pytest.fixture
def sample_results() -> list[CheckResult]:
    """One result of every kind, deliberately out of (sdk, check_id) order."""
    return [
        CheckResult(
            sdk="rust@0.3.0",
            check_id="backoff.envelope",
            verdict=Verdict.FAILED,
            contract_ref="seed-external-workers.md#reconnection-config",
            title="Reconnect gaps stay inside the backoff envelope",
            message="fixed 2 s retry, no exponential growth",
            evidence={"gaps": envelope_gaps((3, 4, 5, 6))},
            declared="bug (iii#1234): Rust SDK retries every 2 s",
            duration_s=9.5,
        ),
        CheckResult(
            sdk="python@0.25.0",
            check_id="backoff.envelope",
            verdict=Verdict.FAILED,
            contract_ref="seed-external-workers.md#reconnection-config",
            title="Reconnect gaps stay inside the backoff envelope",
            message="gap 4 (12800 ms) outside [5500, 10500] ms",
            evidence={"gaps": envelope_gaps((4,)), "frames": ["register", "close 1006"]},
            seed="@reproduce_failure('6.100.0', b'AXicY2BgAAAABAAB')",
            example="engine closes with 1006 right after register; SDK redials after 12.8 s",
            duration_s=31.25,
            fault_schedule="reset_peer@upstream:t=0.5s",
        ),
        CheckResult(
            sdk="python@0.25.0",
            check_id="jitter.range",
            verdict=Verdict.OK,
            contract_ref="seed-external-workers.md#reconnection-config",
            title="Jitter covers the expected band",
            evidence={"normalised": [0.7 + 0.6 * i / 19 for i in range(20)], "jitter": 0.3},
            duration_s=20.0,
        ),
        CheckResult(
            sdk="node@0.22.1",
            check_id="timeout.default",
            verdict=Verdict.NON_STRICT,
            contract_ref="iii-protocol.md \u00a711.1",
            message="invocation timed out after 30.4 s (expected 30 s \u00b1 0.25 s)",
            evidence={"timeout_ms": 30400},
            duration_s=30.5,
        ),
        CheckResult(
            sdk="node@0.22.1",
            check_id="malformed.survives",
            verdict=Verdict.INFORMATIONAL,
            message="SDK logged the malformed frame and carried on",
        ),
        CheckResult(
            sdk="node@0.22.1",
            check_id="payload.roundtrip",
            verdict=Verdict.SKIPPED,
            message="driver does not support binary payloads",
        ),
        CheckResult(
            sdk="node@0.22.1",
            check_id="cleanup.functions_removed",
            verdict=Verdict.OK,
            declared="bug (iii#999): stale functions after reconnect",
            unexpected_pass=True,
            duration_s=1.0,
        ),
        CheckResult(
            sdk="python@0.25.0",
            check_id="replay.order",
            verdict=Verdict.OK,
            profile="gate",
            duration_s=0.5,
        ),
    ]
