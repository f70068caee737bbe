"""Re-render every human report from ``DIR/results.json`` (or write them all at once)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .junit import JUNIT_FILENAME, write_junit
from .model import CheckResult
from .plots import evidence_plots
from .results_json import RunReport, atomic_write_text, read_results, write_results
from .summary import result_anchor, write_html, write_markdown

PLOTS_DIRNAME = "plots"


@dataclass
class RenderedPaths:
    results_json: Path | None = None
    summary_md: Path | None = None
    index_html: Path | None = None
    junit_xml: Path | None = None
    plots: list[Path] = field(default_factory=list)


def write_plots(
    out_dir: str | os.PathLike[str], report: RunReport
) -> dict[str, list[tuple[str, str]]]:
    """Write ``out_dir/plots/<anchor>-<kind>.svg`` for results whose evidence has
    ``gaps`` / ``normalised``; return ``{anchor: [(relative file name, svg)]}``."""
    plot_map: dict[str, list[tuple[str, str]]] = {}
    for index, result in enumerate(report.results):
        figures = evidence_plots(result.evidence, title=f"{result.check_id} [{result.sdk}]")
        if not figures:
            continue
        anchor = result_anchor(index, result)
        for kind, svg in sorted(figures.items()):
            rel = f"{PLOTS_DIRNAME}/{anchor}-{kind}.svg"
            atomic_write_text(Path(out_dir) / rel, svg + "\n")
            plot_map.setdefault(anchor, []).append((rel, svg))
    return plot_map


def render_report(
    out_dir: str | os.PathLike[str], report: RunReport, *, junit: bool = True
) -> RenderedPaths:
    """Write summary.md, index.html, plots/*.svg (and junit.xml) for ``report``."""
    out = Path(out_dir)
    paths = RenderedPaths()
    plot_map = write_plots(out, report)
    paths.plots = [out / rel for figures in plot_map.values() for rel, _ in figures]
    paths.summary_md = write_markdown(out, report)
    paths.index_html = write_html(out, report, plots=plot_map)
    if junit:
        paths.junit_xml = write_junit(out / JUNIT_FILENAME, report)
    return paths


def render(out_dir: str | os.PathLike[str], *, junit: bool = True) -> RenderedPaths:
    """Re-render the human reports from an existing ``out_dir/results.json``."""
    report = read_results(out_dir)
    paths = render_report(out_dir, report, junit=junit)
    paths.results_json = Path(out_dir) / "results.json"
    return paths


def write_all(
    out_dir: str | os.PathLike[str],
    results: RunReport | Iterable[CheckResult],
    *,
    junit: bool = True,
    **metadata: object,
) -> RenderedPaths:
    """Write results.json, then every derived report; ``metadata`` goes to write_results."""
    path = write_results(out_dir, results, **metadata)  # type: ignore[arg-type]
    report = read_results(path)
    paths = render_report(out_dir, report, junit=junit)
    paths.results_json = path
    return paths
