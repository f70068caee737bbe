"""JUnit XML (xunit2 flavour, Jenkins ``junit-10.xsd`` shape) for CI systems.

* one ``<testsuite>`` per SDK label, ``<testcase name="check_id[sdk]" classname="family">``;
* undeclared FAILED -> ``<failure message=... type="FAILED">`` with an evidence summary,
  the reproduction line and the minimal example in the body;
* SKIPPED -> ``<skipped message=reason>``;
* declared FAILED, NON-STRICT, INFORMATIONAL and unexpected passes are passing test
  cases with an explanatory ``<system-out>``.

Only attributes allowed by junit-10.xsd are emitted (``testsuites`` has no ``skipped``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from ._text import evidence_summary, first_line, truncate, xml_safe
from .model import CheckResult, Verdict
from .results_json import RunReport, atomic_write_text

JUNIT_FILENAME = "junit.xml"
DEFAULT_SUITE_NAME = "iii-conformance"


def _time(seconds: float) -> str:
    return f"{max(0.0, seconds):.3f}"


def _timestamp(iso: str) -> str:
    """junit-10 style ``YYYY-MM-DDTHH:MM:SS`` (UTC, no zone)."""
    try:
        dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.replace(microsecond=0).isoformat()


def testcase_name(result: CheckResult) -> str:
    return f"{result.check_id}[{result.sdk}]"


def _details(result: CheckResult, *, evidence_limit: int = 4000) -> str:
    lines = [f"{result.verdict.value}: {result.title or result.check_id}"]
    if result.contract_ref:
        lines.append(f"contract: {result.contract_ref}")
    if result.message:
        lines.append(f"message: {result.message}")
    if result.declared:
        lines.append(f"declared: {result.declared}")
    if result.unexpected_pass:
        lines.append("unexpected pass: a declared deviation did not reproduce (XPASS)")
    if result.reproduction:
        lines.append(f"reproduce: {result.reproduction}")
    if result.profile:
        lines.append(f"profile: {result.profile}")
    if result.example:
        lines.append("minimal example:")
        lines.extend("  " + line for line in result.example.splitlines())
    if result.evidence:
        lines.append("evidence:")
        lines.extend("  " + line for line in evidence_summary(result.evidence))
    return xml_safe(truncate("\n".join(lines), evidence_limit))


def _testcase(result: CheckResult) -> ET.Element:
    case = ET.Element(
        "testcase",
        {
            "name": xml_safe(testcase_name(result)),
            "classname": xml_safe(result.family),
            "time": _time(result.duration_s),
        },
    )
    if result.is_blocking:
        summary = first_line(result.message) or result.title or "check failed"
        failure = ET.SubElement(
            case, "failure", {"message": xml_safe(summary), "type": Verdict.FAILED.value}
        )
        failure.text = _details(result)
    elif result.verdict is Verdict.SKIPPED:
        reason = first_line(result.message) or "skipped"
        ET.SubElement(case, "skipped", {"message": xml_safe(reason), "type": "SKIPPED"})
        out = ET.SubElement(case, "system-out")
        out.text = _details(result)
    elif result.verdict is not Verdict.OK or result.unexpected_pass:
        out = ET.SubElement(case, "system-out")
        out.text = _details(result)
    return case


def build_junit(
    results: RunReport | Iterable[CheckResult],
    *,
    suite_name: str = DEFAULT_SUITE_NAME,
    hostname: str = "localhost",
) -> ET.Element:
    """The ``<testsuites>`` element for ``results`` (sorted by sdk, check_id)."""
    report = results if isinstance(results, RunReport) else RunReport(results=list(results))
    by_sdk: dict[str, list[CheckResult]] = {label: [] for label in report.sdk_labels}
    for result in report.results:
        by_sdk.setdefault(result.sdk, []).append(result)

    root = ET.Element("testsuites", {"name": xml_safe(suite_name)})
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for index, (sdk, items) in enumerate(sorted(by_sdk.items())):
        failures = sum(1 for r in items if r.is_blocking)
        skipped = sum(1 for r in items if r.verdict is Verdict.SKIPPED)
        duration = sum(r.duration_s for r in items)
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": xml_safe(sdk),
                "tests": str(len(items)),
                "failures": str(failures),
                "errors": "0",
                "skipped": str(skipped),
                "time": _time(duration),
                "timestamp": _timestamp(report.started_at),
                "hostname": xml_safe(hostname),
                "id": str(index),
            },
        )
        props = ET.SubElement(suite, "properties")
        info = report.sdks.get(sdk, {})
        for key, value in [("sdk", sdk), ("profile", report.profile)] + sorted(
            (f"sdk.{k}", v) for k, v in info.items() if v is not None
        ):
            ET.SubElement(props, "property", {"name": xml_safe(key), "value": xml_safe(value)})
        for result in items:
            suite.append(_testcase(result))
        totals["tests"] += len(items)
        totals["failures"] += failures
        total_time += duration
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", _time(total_time))
    return root


def to_junit_xml(
    results: RunReport | Iterable[CheckResult],
    *,
    suite_name: str = DEFAULT_SUITE_NAME,
    hostname: str = "localhost",
) -> str:
    root = build_junit(results, suite_name=suite_name, hostname=hostname)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def write_junit(
    path: str | os.PathLike[str],
    results: RunReport | Iterable[CheckResult],
    *,
    suite_name: str = DEFAULT_SUITE_NAME,
    hostname: str = "localhost",
) -> Path:
    """Write JUnit XML atomically; ``path`` may be a directory (-> ``path/junit.xml``)."""
    target = Path(path)
    if target.is_dir() or not target.suffix:
        target = target / JUNIT_FILENAME
    return atomic_write_text(
        target, to_junit_xml(results, suite_name=suite_name, hostname=hostname)
    )
