from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from reports.__main__ import main
from reports.render import render, write_all
from reports.results_json import read_results

META = {"started_at": "2026-08-21T10:00:00Z", "finished_at": "2026-08-21T10:05:00Z"}
REPO = Path(__file__).resolve().parents[2]


def test_write_all_then_rerender(tmp_path, sample_results):
    paths = write_all(tmp_path, sample_results, profile="gate", **META)
    assert paths.results_json == tmp_path / "results.json"
    # Plots for the two backoff results (gaps) and the jitter result (normalised).
    names = sorted(p.name for p in paths.plots)
    assert len(names) == 3 and sum(n.endswith("-backoff.svg") for n in names) == 2
    assert sum(n.endswith("-jitter.svg") for n in names) == 1
    for plot in paths.plots:
        ET.parse(plot)  # well-formed standalone SVG
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    for plot in paths.plots:
        assert f'href="plots/{plot.name}"' in page
    assert page.count("<svg ") == 3 and "http://" not in page and "https://" not in page
    assert ET.parse(tmp_path / "junit.xml").getroot().attrib["failures"] == "1"

    before = {p: p.read_bytes() for p in (tmp_path / "summary.md", tmp_path / "index.html")}
    for p in before:
        p.unlink()
    for plot in paths.plots:
        plot.unlink()
    again = render(tmp_path)
    assert {p: p.read_bytes() for p in before} == before  # deterministic re-render
    assert sorted(p.name for p in again.plots) == names


def test_main_exit_codes(tmp_path, sample_results, capsys):
    write_all(tmp_path, sample_results, **META)
    assert main([str(tmp_path), "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert "backoff.envelope[python@0.25.0]" in out and "summary.md" in out
    assert main([str(tmp_path), "-q", "--exit-code"]) == 1
    passing = [r for r in sample_results if not r.is_blocking]
    write_all(tmp_path / "ok", passing, **META)
    assert main([str(tmp_path / "ok"), "-q", "--exit-code"]) == 0
    assert main([str(tmp_path / "missing"), "-q"]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"schema": "nope"}))
    assert main([str(tmp_path / "bad"), "-q"]) == 2


def test_python_dash_m(tmp_path, sample_results):
    write_all(tmp_path, sample_results, **META)
    (tmp_path / "index.html").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "reports", str(tmp_path), "--no-junit", "--exit-code"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert (tmp_path / "index.html").exists()
    assert "FAIL:" in proc.stdout
    assert read_results(tmp_path).summary.exit_code() == 1
