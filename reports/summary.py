"""Human summaries of a run.

* :func:`render_text` - terminal table (family rows x SDK columns, worst verdict with
  counts) followed by one line per non-OK result with its message and reproduction line;
* :func:`render_markdown` / :func:`write_markdown` - ``summary.md`` for GitHub step
  summaries: check x SDK matrix (OTel compliance-matrix style) + details per FAILED /
  NON-STRICT result with evidence excerpts;
* :func:`render_html` / :func:`write_html` - self-contained ``index.html`` (Autobahn-like
  matrix, SDK columns, check rows, coloured cells linking to per-result detail anchors with
  pretty-printed evidence and inline SVG plots). No external assets, scripts or URLs.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ._text import evidence_summary, first_line, pretty_json, slug, truncate, xml_safe
from .model import CheckResult, Status, Verdict, worst_status
from .plots import inline_svg
from .results_json import RunReport, atomic_write_text

SUMMARY_MD_FILENAME = "summary.md"
INDEX_HTML_FILENAME = "index.html"

# (file name relative to the report dir, SVG text) per result anchor.
PlotMap = Mapping[str, Sequence[tuple[str, str]]]

_SHORT = {
    Status.OK: "OK",
    Status.XPASS: "XPASS",
    Status.SKIPPED: "SKIP",
    Status.INFORMATIONAL: "INFO",
    Status.NON_STRICT: "NON-STRICT",
    Status.DECLARED: "DECLARED",
    Status.FAILED: "FAILED",
}
_EMOJI = {
    Status.OK: "\u2705",  # check mark
    Status.XPASS: "\U0001f389",  # party popper: declared deviation no longer reproduces
    Status.SKIPPED: "\u23ed\ufe0f",
    Status.INFORMATIONAL: "\u2139\ufe0f",
    Status.NON_STRICT: "\u26a0\ufe0f",
    Status.DECLARED: "\U0001f7e0",  # orange circle
    Status.FAILED: "\u274c",
}
_ANSI = {
    Status.OK: "32",
    Status.XPASS: "36",
    Status.SKIPPED: "90",
    Status.INFORMATIONAL: "34",
    Status.NON_STRICT: "33",
    Status.DECLARED: "35",
    Status.FAILED: "1;31",
}
_LEGEND = [
    (Status.OK, "behaves as the contract requires"),
    (Status.NON_STRICT, "acceptable but not the preferred behaviour"),
    (Status.INFORMATIONAL, "behaviour recorded, not judged"),
    (Status.SKIPPED, "not applicable / not implemented / not run"),
    (Status.DECLARED, "failed, but declared as a known deviation in the manifest"),
    (Status.XPASS, "declared deviation that passed: update the manifest"),
    (Status.FAILED, "undeclared failure: fails the gate"),
]


def _coerce(report: RunReport | Iterable[CheckResult]) -> RunReport:
    return report if isinstance(report, RunReport) else RunReport(results=list(report))


def result_anchor(index: int, result: CheckResult) -> str:
    """Stable HTML id of a result (index in the sorted results keeps duplicates apart)."""
    return f"r{index}-{slug(result.check_id, result.sdk)}"


def _group(
    report: RunReport, key: str
) -> tuple[list[str], dict[tuple[str, str], list[CheckResult]]]:
    cells: dict[tuple[str, str], list[CheckResult]] = {}
    for r in report.results:
        row = r.family if key == "family" else r.check_id
        cells.setdefault((row, r.sdk), []).append(r)
    return sorted({row for row, _ in cells}), cells


def _cell_status(items: Sequence[CheckResult]) -> tuple[Status, int]:
    status = worst_status(r.status for r in items)
    assert status is not None
    return status, sum(1 for r in items if r.status is status)


def _is_notable(r: CheckResult) -> bool:
    return r.status is not Status.OK


def _headline(report: RunReport) -> str:
    summary = report.summary
    return (
        f"iii-conformance {report.profile} run {report.started_at} .. {report.finished_at}: "
        f"{summary.one_line()}"
    )


# ---------------------------------------------------------------------------- text


def render_text(report: RunReport | Iterable[CheckResult], *, color: bool = False) -> str:
    """Terminal summary: family x SDK worst-verdict matrix, then the non-OK results."""
    report = _coerce(report)
    sdks = report.sdk_labels
    families, cells = _group(report, "family")

    def paint(text: str, status: Status | None) -> str:
        if not color or status is None:
            return text
        return f"\x1b[{_ANSI[status]}m{text}\x1b[0m"

    header = ["family", *sdks]
    rows: list[list[tuple[str, Status | None]]] = []
    for fam in families:
        row: list[tuple[str, Status | None]] = [(fam, None)]
        for sdk in sdks:
            items = cells.get((fam, sdk), [])
            if not items:
                row.append(("-", None))
                continue
            status, count = _cell_status(items)
            row.append((f"{_SHORT[status]} {count}/{len(items)}", status))
        rows.append(row)
    widths = [len(h) for h in header]
    for row in rows:
        for i, (text, _) in enumerate(row):
            widths[i] = max(widths[i], len(text))

    lines = [_headline(report), ""]
    lines.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(header)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(paint(t.ljust(widths[i]), s) for i, (t, s) in enumerate(row)).rstrip()
        )

    notable = [r for r in report.results if _is_notable(r)]
    notable.sort(key=lambda r: (-r.status.rank, r.sdk, r.check_id))
    if notable:
        lines += ["", "Non-OK results:"]
        label_w = max(len(_SHORT[r.status]) for r in notable)
        for r in notable:
            text = xml_safe(first_line(r.message, 160) or r.title or "")
            if r.status is Status.DECLARED:
                text += f" (declared: {xml_safe(r.declared)})"
            elif r.status is Status.XPASS:
                text += f" (declared deviation passed: {xml_safe(r.declared or '')})"
            line = f"{paint(_SHORT[r.status].ljust(label_w), r.status)}  {r.check_id}[{r.sdk}]"
            if text:
                line += f": {text.strip()}"
            if r.reproduction:
                line += f" | reproduce: {xml_safe(r.reproduction)}"
            lines.append(line)
    lines += ["", report.summary.one_line()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ markdown

_MD_SPECIAL = re.compile(r"[<>&|\\`*_\[\]]")


def _md(text: str) -> str:
    """Inline Markdown text: no HTML injection, no table breakage, single line."""
    text = " ".join(xml_safe(text).split())
    return _MD_SPECIAL.sub(
        lambda m: html.escape(m.group()) if m.group() in "<>&" else "\\" + m.group(), text
    )


def _fence(body: str, lang: str = "") -> str:
    runs = [len(m) for m in re.findall(r"`+", body)]
    ticks = "`" * max(3, max(runs, default=0) + 1)
    return f"{ticks}{lang}\n{body}\n{ticks}"


def render_markdown(
    report: RunReport | Iterable[CheckResult],
    *,
    max_evidence_chars: int = 1500,
    max_details: int = 60,
) -> str:
    """GitHub-flavoured Markdown summary (matrix + details), bounded in size."""
    report = _coerce(report)
    summary = report.summary
    sdks = report.sdk_labels
    checks, cells = _group(report, "check")
    state = "PASS \u2705" if summary.passed else "FAIL \u274c"
    out = [
        f"## iii-conformance {report.profile}: {state}",
        "",
        f"{summary.one_line()}  ",
        f"Started {report.started_at}, finished {report.finished_at}.",
        "",
        "| check | " + " | ".join(_md(s) for s in sdks) + " |",
        "|---|" + "---|" * len(sdks),
    ]
    for check in checks:
        row = [f"`{check}`"]
        for sdk in sdks:
            items = cells.get((check, sdk), [])
            if not items:
                row.append("\u2013")
                continue
            status, count = _cell_status(items)
            extra = f" {count}/{len(items)}" if len(items) > 1 else ""
            row.append(f"{_EMOJI[status]} {status.label}{extra}")
        out.append("| " + " | ".join(row) + " |")
    out += ["", "Legend: " + "; ".join(f"{_EMOJI[s]} {s.label}: {d}" for s, d in _LEGEND), ""]

    xpass = [r for r in report.results if r.status is Status.XPASS]
    if xpass:
        out += ["### Unexpected passes (update the manifest)", ""]
        out += [f"- `{r.check_id}` [{_md(r.sdk)}]: declared {_md(r.declared or '')}" for r in xpass]
        out.append("")

    detailed = [r for r in report.results if r.verdict in (Verdict.FAILED, Verdict.NON_STRICT)]
    detailed.sort(key=lambda r: (-r.status.rank, r.sdk, r.check_id))
    if detailed:
        out += ["### Details", ""]
    for r in detailed[:max_details]:
        out.append(f"#### {_EMOJI[r.status]} `{r.check_id}` [{_md(r.sdk)}]: {r.status.label}")
        out.append("")
        if r.title:
            out.append(f"- **Check:** {_md(r.title)}")
        if r.contract_ref:
            out.append(f"- **Contract:** {_md(r.contract_ref)}")
        if r.message:
            out.append(f"- **Message:** {_md(truncate(r.message, 500))}")
        if r.declared:
            out.append(f"- **Declared:** {_md(r.declared)}")
        if r.seed:
            out.append(f"- **Reproduce:** `{r.seed.replace('`', '')}`")
        if r.fault_schedule:
            out.append(f"- **Fault schedule:** `{r.fault_schedule.replace('`', '')}`")
        out.append(f"- **Profile:** {_md(r.profile)}, duration {r.duration_s:.3f} s")
        out.append("")
        if r.example:
            out += [
                "<details><summary>Minimal failing example</summary>",
                "",
                _fence(xml_safe(truncate(r.example, max_evidence_chars)), "text"),
                "",
                "</details>",
                "",
            ]
        if r.evidence:
            excerpt = pretty_json(r.evidence, max_evidence_chars)
            out += [
                "<details><summary>Evidence</summary>",
                "",
                _fence(xml_safe(excerpt), "json"),
                "",
                "</details>",
                "",
            ]
    if len(detailed) > max_details:
        out += [f"_{len(detailed) - max_details} more results omitted; see results.json._", ""]
    return "\n".join(out)


def write_markdown(out_dir: str | os.PathLike[str], report: RunReport) -> Path:
    return atomic_write_text(Path(out_dir) / SUMMARY_MD_FILENAME, render_markdown(report))


# ---------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.6em}h3{font-size:1.05em}
table.matrix{border-collapse:collapse;font-size:.9em}
.matrix th,.matrix td{border:1px solid #ccc;padding:3px 8px;text-align:center}
.matrix th.check,.matrix td.check{text-align:left;font-family:ui-monospace,monospace}
.matrix tr.family th{background:#eee;text-align:left}
.matrix td a{color:inherit;text-decoration:none;display:block}
.s-OK{background:#c8e6c9}.s-XPASS{background:#b3e5fc}.s-SKIPPED{background:#e0e0e0;color:#555}
.s-INFORMATIONAL{background:#d1d9ff}.s-NON-STRICT{background:#fff59d}
.s-DECLARED{background:#ffcc80}.s-FAILED{background:#ef9a9a;font-weight:600}
.s-none{color:#aaa}
.pass{color:#2e7d32}.fail{color:#c62828}
section.detail{border:1px solid #ddd;border-left-width:6px;margin:1em 0;padding:.4em 1em}
section.detail.s-OK{border-left-color:#66bb6a;background:none}
section.detail.s-XPASS{border-left-color:#29b6f6;background:none}
section.detail.s-SKIPPED{border-left-color:#9e9e9e;background:none;color:inherit}
section.detail.s-INFORMATIONAL{border-left-color:#5c6bc0;background:none}
section.detail.s-NON-STRICT{border-left-color:#fbc02d;background:none}
section.detail.s-DECLARED{border-left-color:#fb8c00;background:none}
section.detail.s-FAILED{border-left-color:#e53935;background:none;font-weight:normal}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}dt{font-weight:600}dd{margin:0}
pre{background:#f6f8fa;padding:.6em;overflow:auto;max-height:30em;font-size:.85em}
.plots svg{max-width:100%;height:auto;border:1px solid #eee;margin:.3em 0}
.legend span{display:inline-block;padding:1px 6px;margin:2px;border:1px solid #ccc}
.muted{color:#777;font-size:.85em}
"""


def _h(text: object) -> str:
    return html.escape(xml_safe(text), quote=True)


def render_html(
    report: RunReport | Iterable[CheckResult],
    *,
    plots: PlotMap | None = None,
    max_evidence_chars: int = 200_000,
) -> str:
    """Self-contained HTML matrix + per-result details (``plots``: anchor -> [(file, svg)])."""
    report = _coerce(report)
    plots = plots or {}
    summary = report.summary
    sdks = report.sdk_labels
    anchors = {id(r): result_anchor(i, r) for i, r in enumerate(report.results)}
    checks, cells = _group(report, "check")
    state = '<span class="pass">PASS</span>' if summary.passed else '<span class="fail">FAIL</span>'

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>iii-conformance {_h(report.profile)} report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>iii-conformance {_h(report.profile)} report: {state}</h1>",
        f"<p>{_h(summary.one_line())}<br>",
        f'<span class="muted">started {_h(report.started_at)}, finished '
        f"{_h(report.finished_at)}</span></p>",
        '<p class="legend">'
        + "".join(
            f'<span class="s-{s.value}" title="{_h(d)}">{_h(s.label)}</span>' for s, d in _LEGEND
        )
        + "</p>",
        '<h2 id="matrix">Matrix</h2>',
        '<table class="matrix"><thead><tr><th class="check">check</th>',
    ]
    for sdk in sdks:
        info = report.sdks.get(sdk, {})
        extra = ", ".join(f"{k}={v}" for k, v in sorted(info.items()) if v is not None)
        out.append(f'<th title="{_h(extra)}">{_h(sdk)}</th>')
    out.append("</tr></thead><tbody>")
    current_family = None
    for check in checks:
        family = check.split(".", 1)[0]
        if family != current_family:
            current_family = family
            out.append(f'<tr class="family"><th colspan="{len(sdks) + 1}">{_h(family)}</th></tr>')
        out.append(f'<tr><td class="check">{_h(check)}</td>')
        for sdk in sdks:
            items = cells.get((check, sdk), [])
            if not items:
                out.append('<td class="s-none">&mdash;</td>')
                continue
            status, count = _cell_status(items)
            target = next(r for r in items if r.status is status)
            extra = f" {count}/{len(items)}" if len(items) > 1 else ""
            tip = first_line(target.message, 200) or target.title
            if target.declared and status in (Status.DECLARED, Status.XPASS):
                tip = f"declared: {target.declared}" + (f" \u2014 {tip}" if tip else "")
            out.append(
                f'<td class="s-{status.value}" title="{_h(tip)}">'
                f'<a href="#{anchors[id(target)]}">{_h(status.label)}{extra}</a></td>'
            )
        out.append("</tr>")
    out.append("</tbody></table>")

    out.append("<h2>Details</h2>")
    for r in report.results:
        anchor = anchors[id(r)]
        out.append(f'<section class="detail s-{r.status.value}" id="{anchor}">')
        out.append(
            f"<h3>{_h(r.check_id)} [{_h(r.sdk)}]: {_h(r.status.label)} "
            f'<a class="muted" href="#matrix">back to matrix</a></h3>'
        )
        fields = [
            ("check", r.title),
            ("contract", r.contract_ref),
            ("verdict", r.verdict.value),
            ("message", r.message),
            ("declared", r.declared),
            ("unexpected pass", "yes: update the manifest" if r.unexpected_pass else None),
            ("reproduce", r.seed),
            ("fault schedule", r.fault_schedule),
            ("profile", r.profile),
            ("duration", f"{r.duration_s:.3f} s"),
        ]
        out.append("<dl>")
        out += [f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in fields if v]
        out.append("</dl>")
        if r.example:
            out.append(f"<p>Minimal failing example:</p><pre>{_h(r.example)}</pre>")
        figures = plots.get(anchor, [])
        if figures:
            out.append('<div class="plots">')
            for filename, svg in figures:
                out.append(inline_svg(svg))
                out.append(f'<p class="muted"><a href="{_h(filename)}">{_h(filename)}</a></p>')
            out.append("</div>")
        if r.evidence:
            lines = evidence_summary(r.evidence, 120)
            out.append(f"<details open><summary>Evidence ({len(lines)} keys)</summary>")
            out.append(f"<pre>{_h(pretty_json(r.evidence, max_evidence_chars))}</pre></details>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(
    out_dir: str | os.PathLike[str], report: RunReport, *, plots: PlotMap | None = None
) -> Path:
    return atomic_write_text(Path(out_dir) / INDEX_HTML_FILENAME, render_html(report, plots=plots))
