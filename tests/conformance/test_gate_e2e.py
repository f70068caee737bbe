"""The gate CLI end to end against the published SDKs, on a few fast checks: the verdicts the
manifests declare stay FAILED-but-declared, and the run exits 0."""

from __future__ import annotations

import json
import subprocess
import sys


def test_gate_on_published_sdks(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance.cli",
            "gate",
            "--sdk",
            "python@0.25.0",
            "--sdk",
            "node@0.22.1",
            "--report-dir",
            str(out),
            "--check",
            "replay.reattach_first",
            "--check",
            "payload.null",
            "--check",
            "rejection.worker_conflict_fatal",
            "--check",
            "timeout.error_shape",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    got = {(r["check_id"], r["sdk"]): r for r in results}
    assert len(got) == 8
    verdicts = {k: v["verdict"] for k, v in got.items()}
    assert verdicts[("replay.reattach_first", "python@0.25.0")] == "OK"
    assert verdicts[("replay.reattach_first", "node@0.22.1")] == "OK"
    # Real deviations of the published SDKs, declared in conformance/manifests/.
    assert verdicts[("payload.null", "python@0.25.0")] == "FAILED"
    assert got[("payload.null", "python@0.25.0")]["declared"].startswith("bug:")
    assert verdicts[("rejection.worker_conflict_fatal", "node@0.22.1")] == "FAILED"
    assert got[("rejection.worker_conflict_fatal", "node@0.22.1")]["declared"]
    assert verdicts[("timeout.error_shape", "node@0.22.1")] == "NON-STRICT"
    failed = got[("payload.null", "python@0.25.0")]
    assert failed["evidence"]["transcript"], "a FAILED verdict carries the frames"
    assert "--check payload.null" in failed["seed"]
    for name in ("junit.xml", "summary.md", "index.html"):
        assert (out / name).exists()
