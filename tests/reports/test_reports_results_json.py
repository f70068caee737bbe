from __future__ import annotations

import json
import os
import random

import pytest

from reports import results_json
from reports.model import CheckResult, Verdict
from reports.results_json import (
    SCHEMA,
    ResultsFormatError,
    RunReport,
    read_results,
    write_results,
)

META = {"started_at": "2026-08-21T10:00:00Z", "finished_at": "2026-08-21T10:05:00Z"}


def test_round_trip(tmp_path, sample_results):
    path = write_results(
        tmp_path, sample_results, profile="gate", sdks={"python@0.25.0": {"commit": "abc"}}, **META
    )
    assert path == tmp_path / "results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == [
        "schema",
        "started_at",
        "finished_at",
        "profile",
        "sdks",
        "results",
        "summary",
    ]
    assert data["schema"] == SCHEMA
    assert data["sdks"]["python@0.25.0"] == {
        "name": "python",
        "version": "0.25.0",
        "commit": "abc",
    }
    assert data["summary"]["exit_code"] == 1
    report = read_results(tmp_path)
    assert report.results == sorted(sample_results, key=lambda r: (r.sdk, r.check_id))
    assert (report.started_at, report.finished_at, report.profile) == (
        META["started_at"],
        META["finished_at"],
        "gate",
    )
    assert set(report.sdks) == {"node@0.22.1", "python@0.25.0", "rust@0.3.0"}
    # Re-writing what was read gives identical bytes.
    first = path.read_bytes()
    write_results(tmp_path, report)
    assert path.read_bytes() == first


def test_deterministic_ordering(tmp_path, sample_results):
    a, b = tmp_path / "a", tmp_path / "b"
    shuffled = list(sample_results)
    random.Random(7).shuffle(shuffled)
    write_results(a, sample_results, **META)
    write_results(b, shuffled, **META)
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    keys = [
        (r["sdk"], r["check_id"]) for r in json.loads((a / "results.json").read_text())["results"]
    ]
    assert keys == sorted(keys)


def test_atomic_write_leaves_no_temp_and_keeps_old_on_failure(
    tmp_path, sample_results, monkeypatch
):
    write_results(tmp_path, sample_results[:2], **META)
    old = (tmp_path / "results.json").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results_json.os, "replace", boom)
    with pytest.raises(OSError):
        write_results(tmp_path, sample_results, **META)
    assert (tmp_path / "results.json").read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    assert oct(os.stat(tmp_path / "results.json").st_mode & 0o777) == "0o644"


def test_awkward_evidence_is_strict_json(tmp_path):
    result = CheckResult(
        sdk="python@0.25.0",
        check_id="malformed.survives",
        verdict=Verdict.INFORMATIONAL,
        message="bad frame \udcff\x00",
        evidence={"nan": float("nan"), "inf": float("-inf"), "raw": b"\xff\x00", "t": (1, 2)},
    )
    path = write_results(tmp_path, [result], **META)
    text = path.read_bytes().decode("utf-8")  # valid UTF-8 despite the lone surrogate

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(text, parse_constant=reject)
    evidence = data["results"][0]["evidence"]
    assert evidence["nan"] == "NaN" and evidence["inf"] == "-Infinity"
    assert evidence["t"] == [1, 2]
    assert read_results(path).results[0].message == "bad frame \udcff\x00"


def test_read_errors(tmp_path):
    with pytest.raises(ResultsFormatError):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ResultsFormatError):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema": "other/v9", "results": []}))
    with pytest.raises(ResultsFormatError):
        read_results(tmp_path / "results.json")
    (tmp_path / "results.json").write_text(
        json.dumps({"schema": SCHEMA, "results": [{"sdk": "x", "verdict": "OK"}]})
    )
    with pytest.raises(ResultsFormatError):
        read_results(tmp_path)


def test_run_report_defaults():
    report = RunReport(results=[])
    assert report.started_at.endswith("Z") and report.summary.total == 0
    assert RunReport.from_dict(report.to_dict()) == report
