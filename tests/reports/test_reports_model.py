from __future__ import annotations

import pytest

from reports.model import (
    EXIT_FAILED,
    EXIT_HARNESS_ERROR,
    EXIT_OK,
    CheckResult,
    RunSummary,
    Status,
    Verdict,
    split_sdk_label,
    worst_status,
)


def r(verdict: Verdict, *, declared: str | None = None, check: str = "replay.order", **kw):
    return CheckResult(
        sdk="python@0.25.0", check_id=check, verdict=verdict, declared=declared, **kw
    )


def test_verdict_values_and_parse():
    assert [v.value for v in Verdict] == ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "SKIPPED"]
    assert str(Verdict.NON_STRICT) == "NON-STRICT"
    for text in ("NON-STRICT", "non_strict", "NON_STRICT", " non-strict "):
        assert Verdict.parse(text) is Verdict.NON_STRICT
    assert Verdict.parse(Verdict.OK) is Verdict.OK
    with pytest.raises(ValueError):
        Verdict.parse("UNIMPLEMENTED")


def test_family_and_sdk_label():
    assert r(Verdict.OK, check="cleanup.functions_removed").family == "cleanup"
    assert r(Verdict.OK, check="backoff.envelope.cap").family == "backoff"
    assert r(Verdict.OK, check="smoke").family == "smoke"
    assert split_sdk_label("node@0.22.1") == ("node", "0.22.1")
    assert split_sdk_label("rust") == ("rust", None)


def test_round_trip_all_fields():
    original = CheckResult(
        sdk="node@0.22.1",
        check_id="backoff.envelope",
        verdict=Verdict.NON_STRICT,
        contract_ref="iii-protocol.md \u00a711.1",
        title="t",
        message="m",
        evidence={"gaps": [{"attempt": 1, "gap_ms": 1000.5}], "frames": ["a", "b"]},
        seed="--hypothesis-seed=42",
        example="ex",
        duration_s=1.25,
        declared="bug (X)",
        unexpected_pass=False,
        profile="nightly",
        fault_schedule="latency=500ms",
    )
    data = original.to_dict()
    assert data["verdict"] == "NON-STRICT"
    assert data["family"] == "backoff"
    assert CheckResult.from_dict(data) == original
    assert CheckResult.from_dict({**data, "future_field": 1}) == original


def test_from_dict_requires_identity_and_defaults_rest():
    with pytest.raises(ValueError):
        CheckResult.from_dict({"sdk": "x", "verdict": "OK"})
    minimal = CheckResult.from_dict({"sdk": "x@1", "check_id": "a.b", "verdict": "SKIPPED"})
    assert minimal.evidence == {} and minimal.profile == "gate" and minimal.duration_s == 0.0


def test_status_mapping_and_worst():
    assert r(Verdict.FAILED).status is Status.FAILED
    assert r(Verdict.FAILED, declared="bug").status is Status.DECLARED
    assert r(Verdict.OK, declared="bug", unexpected_pass=True).status is Status.XPASS
    assert r(Verdict.NON_STRICT).status is Status.NON_STRICT
    assert r(Verdict.SKIPPED).status is Status.SKIPPED
    assert worst_status([Status.OK, Status.NON_STRICT, Status.DECLARED]) is Status.DECLARED
    assert worst_status([Status.DECLARED, Status.FAILED]) is Status.FAILED
    assert worst_status([]) is None


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param([], EXIT_OK, id="empty"),
        pytest.param([r(Verdict.OK)], EXIT_OK, id="ok"),
        pytest.param([r(Verdict.NON_STRICT)], EXIT_OK, id="non-strict"),
        pytest.param([r(Verdict.INFORMATIONAL)], EXIT_OK, id="informational"),
        pytest.param([r(Verdict.SKIPPED)], EXIT_OK, id="skipped"),
        pytest.param([r(Verdict.FAILED, declared="bug (iii#1)")], EXIT_OK, id="declared-failure"),
        pytest.param(
            [r(Verdict.OK, declared="bug", unexpected_pass=True)], EXIT_OK, id="unexpected-pass"
        ),
        pytest.param(
            [
                r(Verdict.OK),
                r(Verdict.NON_STRICT),
                r(Verdict.INFORMATIONAL),
                r(Verdict.SKIPPED),
                r(Verdict.FAILED, declared="bug"),
            ],
            EXIT_OK,
            id="everything-but-undeclared",
        ),
        pytest.param([r(Verdict.FAILED)], EXIT_FAILED, id="undeclared-failure"),
        pytest.param([r(Verdict.FAILED, declared="")], EXIT_FAILED, id="empty-declaration"),
        pytest.param(
            [r(Verdict.FAILED, declared="bug"), r(Verdict.FAILED, check="jitter.range")],
            EXIT_FAILED,
            id="declared-and-undeclared",
        ),
        pytest.param(
            [r(Verdict.OK), r(Verdict.NON_STRICT), r(Verdict.FAILED)], EXIT_FAILED, id="mixed"
        ),
    ],
)
def test_exit_codes(results, expected):
    assert RunSummary.from_results(results).exit_code() == expected


def test_exit_code_constants_and_empty_is_error():
    assert (EXIT_OK, EXIT_FAILED, EXIT_HARNESS_ERROR) == (0, 1, 2)
    assert RunSummary.from_results([]).exit_code(empty_is_error=True) == EXIT_HARNESS_ERROR
    assert RunSummary.from_results([r(Verdict.OK)]).exit_code(empty_is_error=True) == EXIT_OK


def test_summary_counts(sample_results):
    s = RunSummary.from_results(sample_results)
    assert (s.total, s.ok, s.non_strict, s.informational, s.skipped) == (8, 3, 1, 1, 1)
    assert (s.failed, s.failed_declared, s.unexpected_passes) == (1, 1, 1)
    assert s.blocking == [("python@0.25.0", "backoff.envelope")]
    assert s.to_dict()["blocking"] == ["backoff.envelope[python@0.25.0]"]
    assert s.to_dict()["exit_code"] == 1 and not s.passed


def test_bad_duration_is_sanitised():
    assert r(Verdict.OK, duration_s=float("nan")).duration_s == 0.0
    assert r(Verdict.OK, duration_s=-3).duration_s == 0.0
