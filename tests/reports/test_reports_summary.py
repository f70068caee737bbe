from __future__ import annotations

import re
from html.parser import HTMLParser

from reports.model import CheckResult, Verdict
from reports.results_json import RunReport
from reports.summary import render_html, render_markdown, render_text

META = {"started_at": "2026-08-21T10:00:00Z", "finished_at": "2026-08-21T10:05:00Z"}
SDKS = ["node@0.22.1", "python@0.25.0", "rust@0.3.0"]


def report_of(results) -> RunReport:
    return RunReport(results=results, **META)


def test_text_matrix_and_non_ok_lines(sample_results):
    text = render_text(report_of(sample_results))
    header = next(line for line in text.splitlines() if line.startswith("family"))
    assert header.split() == ["family", *SDKS]
    for family in ("backoff", "cleanup", "jitter", "malformed", "payload", "replay", "timeout"):
        assert re.search(rf"^{family}\s", text, re.M), family
    backoff_row = next(line for line in text.splitlines() if line.startswith("backoff"))
    assert backoff_row.split()[1:] == ["-", "FAILED", "1/1", "DECLARED", "1/1"]
    for result in sample_results:
        if result.status.value != "OK":
            assert f"{result.check_id}[{result.sdk}]" in text
    assert "replay.order[python@0.25.0]" not in text  # plain OK: matrix only
    failed_line = next(line for line in text.splitlines() if line.startswith("FAILED "))
    assert "outside [5500, 10500] ms" in failed_line
    assert "reproduce: @reproduce_failure('6.100.0'" in failed_line
    assert "fault_schedule=reset_peer@upstream:t=0.5s" in failed_line
    assert text.rstrip().endswith("(exit 1)")
    assert "\x1b[" not in text and "\x1b[" in render_text(report_of(sample_results), color=True)


def test_text_escapes_terminal_controls():
    bad = CheckResult("go@1", "malformed.survives", Verdict.FAILED, message="\x1b[2Jboom\x00")
    text = render_text(report_of([bad]))
    assert "\x1b" not in text and "\\x1b[2Jboom\\x00" in text


def test_markdown_matrix_and_details(sample_results):
    md = render_markdown(report_of(sample_results))
    assert md.startswith("## iii-conformance gate: FAIL")
    header = next(line for line in md.splitlines() if line.startswith("| check |"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["check", *SDKS]
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == len({r.check_id for r in sample_results})
    for row in rows:
        assert row.count(" | ") == len(SDKS)
    for result in sample_results:
        assert f"`{result.check_id}`" in md and result.sdk in md
    details = re.findall(r"^#### .*$", md, re.M)
    assert len(details) == 3  # undeclared FAILED, declared FAILED, NON-STRICT
    assert "FAILED (declared)" in details[1] and "NON-STRICT" in details[2]
    assert "```json" in md and '"gap_ms": 12800.0' in md
    assert "- **Declared:** bug (iii#1234): Rust SDK retries every 2 s" in md
    assert "### Unexpected passes" in md


def test_markdown_escapes_table_breakers_and_html():
    bad = CheckResult(
        "go@1",
        "payload.roundtrip",
        Verdict.NON_STRICT,
        message="a | b <script>x</script>",
        evidence={"s": "```"},
    )
    md = render_markdown(report_of([bad]))
    assert "<script>" not in md and "&lt;script&gt;" in md and "a \\| b" in md
    assert "````json" in md  # fence longer than any backtick run in the evidence


def test_markdown_is_bounded():
    many = [
        CheckResult(f"go@{i}", "backoff.envelope", Verdict.FAILED, evidence={"x": "y" * 10_000})
        for i in range(100)
    ]
    md = render_markdown(report_of(many), max_details=10, max_evidence_chars=500)
    assert len(md) < 60_000 and "90 more results omitted" in md


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for key, value in attrs:
            if key == "id":
                self.ids.add(value)
            if key in ("href", "src", "xlink:href", "action", "data"):
                self.refs.append((tag, key, value or ""))


def test_html_self_contained_matrix(sample_results):
    page = render_html(report_of(sample_results))
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    parser = _Collector()
    parser.feed(page)
    assert not parser.tags & {"script", "link", "img", "iframe", "object"}
    for tag, _key, ref in parser.refs:
        assert tag == "a" and ref.startswith("#"), ref
        assert ref[1:] in parser.ids, ref  # every link resolves
    for sdk in SDKS:
        assert f">{sdk}</th>" in page
    for result in sample_results:
        assert f'<td class="check">{result.check_id}</td>' in page
    for css in (
        "s-FAILED",
        "s-DECLARED",
        "s-NON-STRICT",
        "s-INFORMATIONAL",
        "s-SKIPPED",
        "s-XPASS",
        "s-OK",
    ):
        assert f'<td class="{css}"' in page
    assert page.count('<section class="detail') == len(sample_results)
    assert "&quot;gap_ms&quot;: 12800.0" in page  # pretty JSON evidence


def test_html_escapes_hostile_text():
    bad = CheckResult(
        "go@1", "payload.roundtrip", Verdict.FAILED, message="<script>alert(1)</script>\x00"
    )
    page = render_html(report_of([bad]))
    assert "<script>" not in page and "&lt;script&gt;" in page and "\x00" not in page
