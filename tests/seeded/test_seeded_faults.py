"""Seeded faults: each conformance check must FAIL the mini SDK carrying the bug it exists to
catch, and must pass (OK / NON-STRICT / INFORMATIONAL) the same SDK without the bug.

The checks run exactly as a user runs them: ``pytest --pyargs conformance.suite --iii-driver
"<mini driver> --bug X" --iii-check <ids> --iii-report-dir DIR`` in a subprocess, graded from
``DIR/results.json``. Bugs caught by the same checks share one run (one ``--iii-driver`` per
bug, plus ``--bug none``); runs go two at a time (the CI runner has 2 cores).

A check that does not exist yet is reported as SKIPPED naming its id, never silently passed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from launch import driver_label, mini_command

REPO = Path(__file__).resolve().parents[2]
SUITE_DIR = REPO / "conformance" / "suite"
RUN_TIMEOUT_S = 240.0
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


@dataclass(frozen=True)
class Seed:
    """A bug and the check ids that must report it FAILED.

    ``may_fail``: other checks of the same run that may legitimately fail for this bug too
    (they observe the same deviation); any check of the run not listed must not be FAILED.
    """

    bug: str
    catches: tuple[str, ...]
    may_fail: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return self.catches[0].split(".", 1)[0]


# bug -> the check(s) written to catch it (conformance/suite/test_<family>.py).
SEEDS: tuple[Seed, ...] = (
    Seed("no_jitter", ("jitter.applied",)),
    Seed("one_sided_jitter", ("jitter.symmetric",)),
    Seed("narrow_jitter", ("jitter.width",)),
    Seed("wide_jitter", ("jitter.width",)),
    Seed("no_backoff_growth", ("backoff.growth",)),
    Seed("no_cap", ("backoff.cap",)),
    Seed("max_retries_off_by_one", ("backoff.max_retries",)),
    Seed("no_counter_reset", ("backoff.reset",)),
    Seed("no_replay", ("replay.after_reconnect",)),
    Seed("duplicate_replay", ("replay.once_per_connection",)),
    Seed("no_reattach", ("replay.reattach",)),
    Seed("stale_reattach", ("replay.reattach",)),
    Seed("replays_unregistered", ("cleanup.unregistered_not_replayed",)),
    Seed("timeout_never_fires", ("timeout.fires",)),
    Seed("timeout_early", ("timeout.fires",)),
    Seed("drops_malformed", ("malformed.survives",)),
    Seed("no_not_found_reply", ("payload.not_found",)),
    Seed("payload_mangling", ("payload.roundtrip",)),
)


# --- which checks exist -----------------------------------------------------------------------
_CHECK_ID = re.compile(r"""@check\(\s*["']([A-Za-z0-9_.\-]+)["']""")


def existing_checks() -> set[str]:
    """Check ids declared in conformance/suite (read statically; nothing is imported)."""
    ids: set[str] = set()
    for path in SUITE_DIR.glob("test_*.py"):
        ids.update(_CHECK_ID.findall(path.read_text(encoding="utf-8")))
    return ids


# --- running the suite --------------------------------------------------------------------------
@dataclass
class Run:
    """One pytest run of ``checks`` against several mini-SDK drivers."""

    name: str
    bugs: tuple[str, ...]
    checks: tuple[str, ...]
    report_dir: Path
    results: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""
    returncode: int | None = None
    wall_s: float = 0.0

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "conformance.suite",
            "-p",
            "no:cacheprovider",
            "-q",
            "--iii-report-dir",
            str(self.report_dir),
        ]
        for bug in self.bugs:
            argv += ["--iii-driver", mini_command(bug)]
        for check in self.checks:
            argv += ["--iii-check", check]
        return argv

    def execute(self) -> Run:
        t0 = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            proc = subprocess.run(
                self.argv(),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
            )
            self.returncode, self.output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
            self.output = f"run timed out after {RUN_TIMEOUT_S}s\n{out or ''}"
        self.wall_s = time.monotonic() - t0
        results = self.report_dir / "results.json"
        if results.exists():
            self.results = json.loads(results.read_text(encoding="utf-8"))["results"]
        return self

    def verdicts(self, bug: str) -> dict[str, dict[str, Any]]:
        """check id -> result, for the driver seeded with ``bug``."""
        return {r["check_id"]: r for r in self.results if r["sdk"] == driver_label(bug)}

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-n:])


def plan_runs(available: set[str], base: Path) -> dict[str, Run]:
    """One run per family: ``none`` plus every bug whose checks all exist, on those checks."""
    runs: dict[str, Run] = {}
    for seed in SEEDS:
        if not set(seed.catches) <= available:
            continue
        run = runs.get(seed.family)
        if run is None:
            run = runs[seed.family] = Run(seed.family, ("none",), (), base / seed.family)
        run.bugs += (seed.bug,)
        run.checks += tuple(c for c in seed.catches if c not in run.checks)
    return runs


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Starts every family's run at once (2 in parallel); tests wait for their own."""
    runs = plan_runs(existing_checks(), tmp_path_factory.mktemp("seeded"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: pool.submit(run.execute) for name, run in runs.items()}


def finished(suite_runs: dict[str, Any], family: str) -> Run:
    run: Run = suite_runs[family].result(timeout=RUN_TIMEOUT_S * 3)
    if not run.results:
        pytest.fail(f"{family} run produced no results (exit {run.returncode}):\n{run.tail()}")
    return run


def describe(res: dict[str, Any] | None) -> str:
    if res is None:
        return "no result"
    return f"{res['verdict']}: {res.get('message', '')[:400]}"


# --- the tests ------------------------------------------------------------------------------------
def _seed_param(seed: Seed) -> Any:
    return pytest.param(seed, id=seed.bug)


@pytest.mark.parametrize("seed", [_seed_param(s) for s in SEEDS])
def test_check_catches_seeded_bug(seed: Seed, suite_runs: dict[str, Any]) -> None:
    missing = sorted(set(seed.catches) - existing_checks())
    if missing:
        pytest.skip(f"check {', '.join(missing)} not in conformance/suite yet (bug {seed.bug})")
    run = finished(suite_runs, seed.family)
    got = run.verdicts(seed.bug)
    for check_id in seed.catches:
        res = got.get(check_id)
        assert res is not None and res["verdict"] == "FAILED", (
            f"{check_id} did not catch bug {seed.bug!r}: {describe(res)}\n{run.tail(30)}"
        )
    allowed = set(seed.catches) | set(seed.may_fail)
    stray = {
        c: describe(r) for c, r in got.items() if r["verdict"] == "FAILED" and c not in allowed
    }
    assert not stray, f"bug {seed.bug!r} also failed checks not meant to catch it: {stray}"


@pytest.mark.parametrize("family", sorted({s.family for s in SEEDS}))
def test_correct_sdk_passes(family: str, suite_runs: dict[str, Any]) -> None:
    """``--bug none`` passes every check that the family's seeded bugs are meant to fail."""
    wanted = sorted({c for s in SEEDS if s.family == family for c in s.catches})
    available = existing_checks()
    missing = [c for c in wanted if c not in available]
    if len(missing) == len(wanted):
        pytest.skip(f"checks {', '.join(missing)} not in conformance/suite yet")
    run = finished(suite_runs, family)
    got = run.verdicts("none")
    for check_id in wanted:
        if check_id in missing:
            continue
        res = got.get(check_id)
        assert res is not None and res["verdict"] in PASSING, (
            f"{check_id} does not pass the correct mini SDK: {describe(res)}\n{run.tail(30)}"
        )
    failed = {c: describe(r) for c, r in got.items() if r["verdict"] == "FAILED"}
    assert not failed, f"checks failing the correct mini SDK: {failed}"
