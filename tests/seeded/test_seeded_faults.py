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
from mini_sdk import BUGS as BUGS_DOC

REPO = Path(__file__).resolve().parents[2]
SUITE_DIR = REPO / "conformance" / "suite"
MINI_DIR = Path(__file__).resolve().parent / "mini_sdk"
RUN_TIMEOUT_S = 240.0
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


@dataclass(frozen=True)
class Seed:
    """A bug and the check ids that must report it FAILED.

    ``may_fail``: checks that observe the same deviation and may (not must) fail too; every
    other check run against the bug must not be FAILED (the checks are specific).
    """

    bug: str
    catches: tuple[str, ...]
    may_fail: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunSpec:
    """One suite run: ``checks`` against ``--bug none`` and each of ``bugs``.

    Bugs share a run when the same checks catch them; a bug whose failure is slow (a check
    waiting out its bounds) gets a run with only its own check. Every run includes ``none``.
    """

    name: str
    bugs: tuple[str, ...]
    checks: tuple[str, ...]


SEEDS: dict[str, Seed] = {
    s.bug: s
    for s in (
        Seed("no_jitter", ("jitter.band", "jitter.herd")),
        Seed("one_sided_jitter", ("jitter.band",), may_fail=("jitter.herd",)),
        Seed("narrow_jitter", ("jitter.band",), may_fail=("jitter.herd",)),
        Seed("wide_jitter", ("jitter.band",), may_fail=("jitter.herd",)),
        Seed("no_backoff_growth", ("backoff.no_jitter",), may_fail=("backoff.cap",)),
        Seed("no_cap", ("backoff.cap",), may_fail=("backoff.no_jitter",)),
        Seed("max_retries_off_by_one", ("backoff.max_retries",)),
        Seed("no_counter_reset", ("backoff.reset_after_success",)),
        Seed("no_replay", ("replay.registrations_once",)),
        Seed("duplicate_replay", ("replay.registrations_once",)),
        Seed("no_reattach", ("replay.reattach_first",)),
        Seed("stale_reattach", ("replay.reattach_first",)),
        Seed("replays_unregistered", ("replay.nothing_unregistered", "cleanup.no_stale_replay")),
        Seed("timeout_never_fires", ("timeout.per_call",)),
        Seed("timeout_early", ("timeout.per_call",)),
        Seed("drops_malformed", ("malformed.survival",)),
        Seed("no_not_found_reply", ("malformed.unknown_function",)),
        Seed("payload_mangling", ("payload.engine_roundtrip", "payload.worker_roundtrip")),
    )
}

RUNS: tuple[RunSpec, ...] = (
    # Longest first (measured wall: timeout 26 s ... replay-lost 16 s): two workers finish together.
    RunSpec("timeout", ("timeout_early", "timeout_never_fires"), ("timeout.per_call",)),
    RunSpec(
        "frames",
        ("drops_malformed", "no_not_found_reply", "payload_mangling", "replays_unregistered"),
        (
            "malformed.survival",
            "malformed.unknown_function",
            "payload.engine_roundtrip",
            "payload.worker_roundtrip",
            "cleanup.no_stale_replay",
        ),
    ),
    RunSpec(
        "jitter",
        ("no_jitter", "one_sided_jitter", "narrow_jitter", "wide_jitter"),
        ("jitter.band", "jitter.herd"),
    ),
    RunSpec(
        "replay",
        ("duplicate_replay", "no_reattach", "stale_reattach", "replays_unregistered"),
        ("replay.reattach_first", "replay.registrations_once", "replay.nothing_unregistered"),
    ),
    RunSpec(
        "backoff-schedule", ("no_backoff_growth", "no_cap"), ("backoff.no_jitter", "backoff.cap")
    ),
    RunSpec(
        "backoff-retries",
        ("max_retries_off_by_one", "no_counter_reset"),
        ("backoff.max_retries", "backoff.reset_after_success"),
    ),
    # no_replay makes every replay check wait out its 5 s bound: only the check meant for it.
    RunSpec("replay-lost", ("no_replay",), ("replay.registrations_once",)),
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
            "-p",
            "seeded_hypothesis",  # no shrinking: same verdicts, far cheaper FAILEDs
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
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(MINI_DIR)])}
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
    """The runs whose checks exist, each limited to its existing checks."""
    runs = {}
    for spec in RUNS:
        checks = tuple(c for c in spec.checks if c in available)
        if checks:
            runs[spec.name] = Run(spec.name, ("none", *spec.bugs), checks, base / spec.name)
    return runs


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Starts every run at once (2 in parallel: 2 CPUs); each test waits for the runs it reads."""
    runs = plan_runs(existing_checks(), tmp_path_factory.mktemp("seeded"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: pool.submit(run.execute) for name, run in runs.items()}
    for run in runs.values():  # shown with -s: where the time goes
        print(f"seeded run {run.name}: {run.wall_s:.1f}s, exit {run.returncode}", file=sys.stderr)


def finished(suite_runs: dict[str, Any], name: str) -> Run:
    run: Run = suite_runs[name].result(timeout=RUN_TIMEOUT_S * len(suite_runs))
    if not run.results:
        pytest.fail(f"run {name} produced no results (exit {run.returncode}):\n{run.tail()}")
    return run


def describe(res: dict[str, Any] | None, evidence: bool = False) -> str:
    """A result in one line; with ``evidence``, its evidence too (minus the transcript)."""
    if res is None:
        return "no result"
    text = f"{res['verdict']}: {res.get('message', '')[:400]}"
    if evidence:
        ev = {k: v for k, v in (res.get("evidence") or {}).items() if k != "transcript"}
        text += f"\n    evidence: {json.dumps(ev, default=str)[:3000]}"
    return text


def test_plan_covers_every_bug() -> None:
    """Every seeded bug has its checks in some run; every run's bugs are seeded."""
    assert set(SEEDS) == set(BUGS_DOC) - {"none"}
    for seed in SEEDS.values():
        covered = {c for spec in RUNS if seed.bug in spec.bugs for c in spec.checks}
        assert set(seed.catches) <= covered, f"{seed.bug}: {set(seed.catches) - covered}"
    for spec in RUNS:
        assert set(spec.bugs) <= set(SEEDS), spec


@pytest.mark.parametrize("bug", sorted(SEEDS))
def test_check_catches_seeded_bug(bug: str, suite_runs: dict[str, Any]) -> None:
    seed = SEEDS[bug]
    missing = sorted(set(seed.catches) - existing_checks())
    if missing:
        pytest.skip(f"check {', '.join(missing)} not in conformance/suite yet (bug {bug})")
    got: dict[str, dict[str, Any]] = {}
    for spec in RUNS:
        if bug in spec.bugs and spec.name in suite_runs:
            got.update(finished(suite_runs, spec.name).verdicts(bug))
    for check_id in seed.catches:
        res = got.get(check_id)
        assert res is not None and res["verdict"] == "FAILED", (
            f"{check_id} did not catch bug {bug!r} ({BUGS_DOC[bug]}): {describe(res)}"
        )
    allowed = set(seed.catches) | set(seed.may_fail)
    stray = {
        c: describe(r) for c, r in got.items() if r["verdict"] == "FAILED" and c not in allowed
    }
    assert not stray, f"bug {bug!r} also failed checks not meant to catch it: {stray}"


@pytest.mark.parametrize("name", [spec.name for spec in RUNS])
def test_correct_sdk_passes(name: str, suite_runs: dict[str, Any]) -> None:
    """``--bug none`` passes (OK / NON-STRICT / INFORMATIONAL) every check of the run."""
    spec = next(s for s in RUNS if s.name == name)
    if name not in suite_runs:
        pytest.skip(f"checks {', '.join(spec.checks)} not in conformance/suite yet")
    run = finished(suite_runs, name)
    got = run.verdicts("none")
    bad = {
        c: describe(got.get(c), evidence=True)
        for c in run.checks
        if got.get(c, {}).get("verdict") not in PASSING
    }
    assert not bad, f"checks not passing the correct mini SDK: {bad}\n{run.tail(30)}"
