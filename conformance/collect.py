"""Turn pytest outcomes of checks into graded :class:`reports.CheckResult` records.

Applies the expectation manifests: a declared FAILED is reported to pytest as an xfail (visible,
not red), a declared check that passes as an XPASS. With ``--iii-report-dir`` the results,
JUnit XML and summaries are written when the session ends.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from conformance import manifests
from conformance.verdict import VerdictRecorder
from reports import CheckResult, Verdict

_FALSIFYING = re.compile(
    r"^((?:Falsifying example|Failing test case):.*?)(?:\n\s*\n|\Z)", re.S | re.M
)
_REPRO = re.compile(r"(@reproduce_failure\([^)]*\))")


def _sdk_of(item: pytest.Item) -> Any:
    spec = getattr(item, "callspec", None)
    return spec.params.get("iii_sdk_spec") if spec else None


def _hypothesis_parts(text: str) -> tuple[str | None, str | None]:
    ex = _FALSIFYING.search(text)
    repro = _REPRO.search(text)
    return (ex.group(1).strip()[:4000] if ex else None, repro.group(1) if repro else None)


class Collector:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.results: list[CheckResult] = []
        self.started = time.time()
        self.harness_errors: list[str] = []
        self._manifests: dict[str, list[manifests.Declaration]] = {}
        self._extra = config.getoption("--iii-manifest") or []

    def declarations(self, language: str) -> list[manifests.Declaration]:
        if language not in self._manifests:
            try:
                self._manifests[language] = manifests.for_language(language, self._extra)
            except manifests.ManifestError as exc:
                raise pytest.UsageError(str(exc)) from exc
        return self._manifests[language]

    def declaration(self, item: pytest.Item) -> manifests.Declaration | None:
        marker = item.get_closest_marker("iii_check")
        spec = _sdk_of(item)
        if marker is None or spec is None:
            return None
        version = spec.version if spec.language in ("python", "node") else None
        return manifests.lookup(self.declarations(spec.language), marker.args[0], version)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            d = self.declaration(item)
            if d is not None and d.declare == "irrelevant":
                item.add_marker(pytest.mark.skip(reason=f"declared irrelevant: {d.reason}"))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[Any]):
        outcome = yield
        rep: pytest.TestReport = outcome.get_result()
        marker = item.get_closest_marker("iii_check")
        if marker is None:
            return
        phase_done = rep.when == "call" or (rep.when == "setup" and not rep.passed)
        if not phase_done:
            return
        recorder: VerdictRecorder | None = getattr(item, "_iii_verdict", None)
        if recorder is None:
            recorder = VerdictRecorder()
        spec = _sdk_of(item)
        label = spec.label if spec is not None else "unknown"
        text = rep.longreprtext if rep.failed else ""
        if rep.passed:
            verdict = Verdict.parse(recorder.grade)
            message = recorder.message
        elif rep.skipped:
            verdict = Verdict.SKIPPED
            lr = rep.longrepr
            message = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
            message = message.removeprefix("Skipped: ")
        elif rep.when == "setup":
            # The harness could not set the check up: not a verdict on the SDK.
            self.harness_errors.append(f"{item.nodeid}: {text[-2000:]}")
            return
        else:
            verdict = Verdict.FAILED
            crash = getattr(rep.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else text.splitlines()[-1:][0]
        example, repro = _hypothesis_parts(text)
        seed = self.config.getoption("hypothesis_seed", None)
        reproduction = f"iii-conformance gate --sdk {label} --check {marker.args[0]}"
        if seed is not None:
            reproduction += f" --seed {seed}"
        if repro:
            reproduction += f"  (hypothesis: {repro})"
        evidence = recorder.finish(failed=verdict is Verdict.FAILED)
        if verdict is Verdict.FAILED and text:
            evidence.setdefault("failure", text[-6000:])
        declared = None
        unexpected_pass = False
        d = self.declaration(item)
        if d is not None and d.declare != "irrelevant":
            if verdict is Verdict.FAILED:
                declared = d.text()
                rep.outcome = "skipped"
                rep.wasxfail = f"declared {d.text()}"
            elif verdict is not Verdict.SKIPPED:
                unexpected_pass = True
                rep.wasxfail = f"declared {d.text()} but it passed"
        self.results.append(
            CheckResult(
                sdk=label,
                check_id=marker.args[0],
                verdict=verdict,
                contract_ref=marker.kwargs.get("contract", ""),
                title=marker.kwargs.get("title", ""),
                message=message.strip()[:2000],
                evidence=evidence,
                seed=reproduction,
                example=recorder.example or example,
                duration_s=round(rep.duration + getattr(item, "_iii_setup_s", 0.0), 3),
                declared=declared,
                unexpected_pass=unexpected_pass,
                profile=self.config.getoption("--iii-profile") or "gate",
                fault_schedule=recorder.fault_schedule,
            )
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        from reports import RunReport, render_text

        report = RunReport(results=list(self.results), profile=self._profile())
        terminalreporter.write_sep("=", "iii-conformance verdicts")
        terminalreporter.write_line(render_text(report))

    def _profile(self) -> str:
        return self.config.getoption("--iii-profile") or "gate"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        out = self.config.getoption("--iii-report-dir")
        if not out:
            return
        from reports import write_all

        sdks = {}
        for spec in getattr(self.config, "_iii_specs", []):
            sdks[spec.label] = {
                "language": spec.language,
                "version": spec.version,
                "path": spec.path,
            }
        write_all(
            out,
            self.results,
            profile=self._profile(),
            sdks=sdks,
            started_at=_iso(self.started),
            finished_at=_iso(time.time()),
        )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
