"""Reports for iii-conformance runs: results.json, JUnit XML, text/Markdown/HTML, SVG plots.

Stdlib only. Typical use by a runner::

    from reports import CheckResult, Verdict, write_all
    paths = write_all("report/", results, profile="gate", sdks={"python@0.25.0": {...}})
    sys.exit(RunReport(results=results).summary.exit_code())

``python -m reports DIR`` re-renders everything from ``DIR/results.json``.
"""

from .junit import build_junit, to_junit_xml, write_junit
from .model import (
    EXIT_FAILED,
    EXIT_HARNESS_ERROR,
    EXIT_OK,
    PROFILES,
    CheckResult,
    RunSummary,
    Status,
    Verdict,
    family_of,
    split_sdk_label,
)
from .plots import backoff_svg, evidence_plots, jitter_svg
from .render import RenderedPaths, render, render_report, write_all
from .results_json import SCHEMA, ResultsFormatError, RunReport, read_results, write_results
from .summary import render_html, render_markdown, render_text, write_html, write_markdown

__all__ = [
    "EXIT_FAILED",
    "EXIT_HARNESS_ERROR",
    "EXIT_OK",
    "PROFILES",
    "SCHEMA",
    "CheckResult",
    "RenderedPaths",
    "ResultsFormatError",
    "RunReport",
    "RunSummary",
    "Status",
    "Verdict",
    "backoff_svg",
    "build_junit",
    "evidence_plots",
    "family_of",
    "jitter_svg",
    "read_results",
    "render",
    "render_html",
    "render_markdown",
    "render_report",
    "render_text",
    "split_sdk_label",
    "to_junit_xml",
    "write_all",
    "write_html",
    "write_junit",
    "write_markdown",
    "write_results",
]
