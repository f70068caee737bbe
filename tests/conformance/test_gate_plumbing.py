"""Verdict collection, manifests, check selection and the gate's exit codes, end to end through
real pytest runs of small synthetic check modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CHECKS = """
import pytest
from conformance.verdict import check

@check("demo.passes", title="passes", contract="spec#a")
def test_passes(iii_sdk, verdict):
    verdict.evidence(gaps=[1, 2])

@check("demo.fails", title="fails", contract="spec#b")
def test_fails(iii_sdk, verdict):
    verdict.evidence(seen="x")
    assert 1 == 2, "the SDK did x, the contract says y"

@check("demo.nonstrict", title="differs", contract="spec#c")
def test_nonstrict(iii_sdk, verdict):
    verdict.non_strict("message carries the code")

@check("demo.info", title="info", contract="spec#d")
def test_info(iii_sdk, verdict):
    verdict.informational("worth knowing")

@check("demo.skips", title="skips", contract="spec#e")
def test_skips(iii_sdk, verdict):
    pytest.skip("SDK does not expose state")
"""

DRIVER = f"{sys.executable} -c pass"


def run_checks(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    (tmp_path / "test_demo.py").write_text(CHECKS)
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
            "--iii-driver",
            DRIVER,
            "--iii-report-dir",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    results = (
        json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    )
    return proc.returncode, results


def by_id(results: dict) -> dict[str, dict]:
    return {r["check_id"]: r for r in results["results"]}


def test_verdicts_are_graded_and_reported(tmp_path):
    rc, results = run_checks(tmp_path)
    assert rc == 1
    r = by_id(results)
    assert {k: v["verdict"] for k, v in r.items()} == {
        "demo.passes": "OK",
        "demo.fails": "FAILED",
        "demo.nonstrict": "NON-STRICT",
        "demo.info": "INFORMATIONAL",
        "demo.skips": "SKIPPED",
    }
    assert "the SDK did x" in r["demo.fails"]["message"]
    assert r["demo.fails"]["evidence"]["seen"] == "x"
    assert r["demo.fails"]["contract_ref"] == "spec#b"
    assert r["demo.skips"]["message"] == "SDK does not expose state"
    assert "--check demo.fails" in r["demo.fails"]["seed"]
    assert (tmp_path / "report" / "junit.xml").exists()
    assert (tmp_path / "report" / "index.html").exists()


def test_declared_failure_keeps_run_green_and_flags_unexpected_pass(tmp_path):
    manifest = tmp_path / "m.yml"
    manifest.write_text(
        textwrap.dedent("""
        demo.fails:
          - declare: bug
            reason: known deviation, tracked upstream
        demo.passes:
          - declare: missing_feature
            reason: expected to be missing
    """)
    )
    rc, results = run_checks(tmp_path, "--iii-manifest", str(manifest))
    assert rc == 0
    r = by_id(results)
    assert r["demo.fails"]["verdict"] == "FAILED"
    assert r["demo.fails"]["declared"] == "bug: known deviation, tracked upstream"
    assert r["demo.passes"]["unexpected_pass"] is True
    assert results["summary"]["failed"] == 0


def test_irrelevant_checks_are_not_run(tmp_path):
    manifest = tmp_path / "m.yml"
    manifest.write_text("demo.fails:\n  - declare: irrelevant\n    reason: not for this SDK\n")
    rc, results = run_checks(tmp_path, "--iii-manifest", str(manifest))
    assert rc == 0
    assert by_id(results)["demo.fails"]["verdict"] == "SKIPPED"


def test_check_selection(tmp_path):
    rc, results = run_checks(tmp_path, "--iii-check", "demo.info", "--iii-check", "demo.pass*")
    assert rc == 0
    assert set(by_id(results)) == {"demo.info", "demo.passes"}


def test_bad_manifest_is_a_usage_error(tmp_path):
    manifest = tmp_path / "m.yml"
    manifest.write_text("demo.fails:\n  - declare: maybe\n")
    rc, _ = run_checks(tmp_path, "--iii-manifest", str(manifest))
    assert rc == 4  # pytest usage error: nothing ran


def gate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conformance.cli", "gate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_gate_bad_spec_and_bad_driver_exit_2(tmp_path):
    p = gate("--sdk", "pyhton@0.25.0", "--report-dir", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "unknown language 'pyhton'" in p.stderr
    p = gate("--driver", "/nonexistent/driver --x", "--report-dir", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "error" in p.stderr
    p = gate("--report-dir", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "--sdk" in p.stderr
