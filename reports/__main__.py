"""``python -m reports DIR``: re-render summary.md, index.html, plots and junit.xml.

Prints the terminal summary. Exit status: 0 after rendering (or, with ``--exit-code``,
the run's own gate exit code: 0 pass, 1 undeclared failure); 2 when DIR has no readable
results.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .model import EXIT_HARNESS_ERROR, EXIT_OK
from .render import render
from .results_json import ResultsFormatError, read_results
from .summary import render_text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("dir", help="directory containing results.json")
    parser.add_argument("--no-junit", action="store_true", help="do not (re)write junit.xml")
    parser.add_argument("--quiet", "-q", action="store_true", help="do not print the summary")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the terminal summary",
    )
    parser.add_argument(
        "--exit-code",
        action="store_true",
        help="exit with the run's gate exit code (0 pass / 1 undeclared failure)",
    )
    args = parser.parse_args(argv)
    try:
        paths = render(args.dir, junit=not args.no_junit)
        report = read_results(args.dir)
    except ResultsFormatError as exc:
        print(f"reports: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    if not args.quiet:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        sys.stdout.write(render_text(report, color=color))
        written = [paths.summary_md, paths.index_html, paths.junit_xml, *paths.plots]
        print("wrote: " + ", ".join(str(p) for p in written if p is not None))
    return report.summary.exit_code() if args.exit_code else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
