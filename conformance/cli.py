"""``iii-conformance``: the CLI gate SDK maintainers run before a release.

``iii-conformance gate --sdk python@0.25.0 --sdk node@0.22.1 --report-dir DIR`` installs each SDK
(cached), runs the shipped conformance suite against each, writes ``DIR/results.json``, JUnit XML,
``summary.md`` and ``index.html``, and exits 0 (every verdict acceptable or declared), 1 (an
undeclared FAILED) or 2 (the harness itself could not run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from reports import EXIT_HARNESS_ERROR

SUITE = "conformance.suite"


def _install_all(specs: list[str], drivers: list[str]) -> list[Any]:
    from conformance.sdk import SdkInstallError, custom_driver_spec, install, parse_sdk_spec

    out = []
    try:
        parsed = [parse_sdk_spec(s) for s in specs] + [custom_driver_spec(d) for d in drivers]
    except SdkInstallError as exc:
        raise SystemExit(_fail(f"bad SDK spec: {exc}")) from None
    for spec in parsed:
        t0 = time.monotonic()
        try:
            sdk = install(spec)
        except SdkInstallError as exc:
            raise SystemExit(_fail(f"cannot install {spec.label}: {exc}")) from None
        problem = asyncio.run(_preflight(sdk))
        if problem:
            raise SystemExit(_fail(f"the driver for {sdk.label} does not start: {problem}"))
        print(f"iii-conformance: {sdk.label} ready ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
        out.append(sdk)
    return out


async def _preflight(sdk: Any) -> str | None:
    """Start the driver once and wait for `ready`, so a broken driver stops the gate up front."""
    from conformance.drivers.client import DriverError, start_driver

    try:
        async with start_driver(sdk, ready_timeout=30.0) as drv:
            await drv.shutdown(timeout=10.0)
    except (DriverError, OSError) as exc:
        return str(exc)
    return None


def _fail(message: str) -> int:
    print(f"iii-conformance: error: {message}", file=sys.stderr)
    return EXIT_HARNESS_ERROR


class _GateHook:
    """Grabs the collector at the end of the pytest session."""

    def __init__(self) -> None:
        self.collector: Any = None
        self.internal_error = False

    def pytest_sessionfinish(self, session: Any) -> None:
        self.collector = session.config.pluginmanager.get_plugin("iii_collector")

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        self.internal_error = True


def pytest_args(args: argparse.Namespace, report_dir: Path) -> list[str]:
    argv = [
        "--rootdir",
        str(Path(__file__).resolve().parent),
        "--pyargs",
        SUITE,
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfEs",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "--iii-report-dir",
        str(report_dir),
        "--iii-profile",
        args.profile,
    ]
    for s in args.sdk:
        argv += ["--iii-sdk", s]
    for d in args.driver:
        argv += ["--iii-driver", d]
    for m in args.manifest:
        argv += ["--iii-manifest", m]
    for c in args.check:
        argv += ["--iii-check", c]
    if args.seed is not None:
        argv += [f"--hypothesis-seed={args.seed}"]
    return argv + list(args.pytest_args or [])


def gate(args: argparse.Namespace) -> int:
    import pytest

    if not args.sdk and not args.driver:
        return _fail("name at least one --sdk or --driver")
    report_dir = Path(args.report_dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    _install_all(args.sdk, args.driver)
    if args.profile == "nightly" and args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
        print(f"iii-conformance: nightly seed {args.seed}", file=sys.stderr)
    hook = _GateHook()
    t0 = time.monotonic()
    rc = pytest.main(pytest_args(args, report_dir), plugins=[hook])
    wall = time.monotonic() - t0
    col = hook.collector
    if hook.internal_error or col is None or rc in (2, 3, 4):
        return _fail(f"the conformance suite could not run (pytest exit {rc})")
    if col.harness_errors:
        for err in col.harness_errors:
            print(f"iii-conformance: harness error: {err[:1500]}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    if not col.results:
        return _fail("no check ran (check --check / -k selection)")
    from reports import RunReport

    summary = RunReport(results=list(col.results)).summary
    print(
        f"iii-conformance: {len(col.results)} verdicts in {wall:.1f}s; report in {report_dir}",
        file=sys.stderr,
    )
    return summary.exit_code()


def list_checks(args: argparse.Namespace) -> int:
    import pytest

    return pytest.main(
        [
            "--pyargs",
            SUITE,
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "--iii-sdk",
            "python@0.25.0",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iii-conformance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gate", help="run the conformance checks and write reports")
    g.add_argument(
        "--sdk",
        action="append",
        default=[],
        metavar="SPEC",
        help="python@VERSION, node@VERSION, python@PATH, node@PATH (repeatable)",
    )
    g.add_argument(
        "--driver",
        action="append",
        default=[],
        metavar="CMD",
        help="any other driver command speaking the driver protocol (repeatable)",
    )
    g.add_argument("--report-dir", default=os.environ.get("III_REPORT_DIR", "gate-report"))
    g.add_argument("--profile", choices=("gate", "nightly"), default="gate")
    g.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only these checks or families (e.g. replay, backoff.cap)",
    )
    g.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="FILE",
        help="extra expectation manifest of known deviations",
    )
    g.add_argument("--seed", type=int, default=None, help="hypothesis seed (nightly replay)")
    g.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    g.set_defaults(func=gate)
    ls = sub.add_parser("list", help="list the checks")
    ls.set_defaults(func=list_checks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_HARNESS_ERROR
    except KeyboardInterrupt:
        print("iii-conformance: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
