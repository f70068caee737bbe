from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from reports.junit import to_junit_xml, write_junit
from reports.model import CheckResult, Verdict
from reports.results_json import RunReport

# The element/attribute model of Jenkins xunit-plugin junit-10.xsd (the schema pytest's
# xunit2 output targets): allowed/required attributes and allowed child elements.
_SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?")
_SCHEMA = {
    "testsuites": ({"name", "time", "tests", "failures", "errors"}, set(), {"testsuite"}),
    "testsuite": (
        {
            "name",
            "tests",
            "failures",
            "errors",
            "group",
            "time",
            "skipped",
            "timestamp",
            "hostname",
            "id",
            "package",
            "file",
            "log",
            "url",
        },
        {"name", "tests", "failures", "errors"},
        {"testsuite", "properties", "testcase", "system-out", "system-err"},
    ),
    "properties": (set(), set(), {"property"}),
    "property": ({"name", "value"}, {"name", "value"}, set()),
    "testcase": (
        {"name", "time", "classname", "group"},
        {"name"},
        {"skipped", "error", "failure", "system-out", "system-err"},
    ),
    "failure": ({"type", "message"}, set(), set()),
    "error": ({"type", "message"}, set(), set()),
    "skipped": ({"type", "message"}, set(), set()),
    "system-out": (set(), set(), set()),
    "system-err": (set(), set(), set()),
}


def validate_junit10(element: ET.Element) -> None:
    allowed, required, children = _SCHEMA[element.tag]
    assert set(element.attrib) <= allowed, (element.tag, set(element.attrib) - allowed)
    assert required <= set(element.attrib), (element.tag, required - set(element.attrib))
    if "time" in element.attrib:
        assert _SUREFIRE_TIME.fullmatch(element.attrib["time"]), element.attrib["time"]
    for key in ("tests", "failures", "errors", "skipped"):
        if key in element.attrib and element.tag in ("testsuites", "testsuite"):
            assert element.attrib[key].isdigit()
    if element.tag == "testsuite" and "timestamp" in element.attrib:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", element.attrib["timestamp"])
    for child in element:
        assert child.tag in children, (element.tag, child.tag)
        validate_junit10(child)


def parse(results) -> ET.Element:
    report = RunReport(results=results, started_at="2026-08-21T10:00:00Z")
    root = ET.fromstring(to_junit_xml(report).encode("utf-8"))
    assert root.tag == "testsuites"
    validate_junit10(root)
    return root


def case(root: ET.Element, name: str) -> ET.Element:
    found = root.findall(f".//testcase[@name='{name}']")
    assert len(found) == 1, name
    return found[0]


def test_counts_and_structure(sample_results):
    root = parse(sample_results)
    assert root.attrib["tests"] == "8" and root.attrib["failures"] == "1"
    assert root.attrib["errors"] == "0"
    suites = {s.attrib["name"]: s for s in root.findall("testsuite")}
    assert list(suites) == ["node@0.22.1", "python@0.25.0", "rust@0.3.0"]
    expected = {  # sdk: (tests, failures, skipped)
        "node@0.22.1": (4, 0, 1),
        "python@0.25.0": (3, 1, 0),
        "rust@0.3.0": (1, 0, 0),
    }
    for sdk, (tests, failures, skipped) in expected.items():
        suite = suites[sdk]
        assert suite.attrib["tests"] == str(tests) == str(len(suite.findall("testcase")))
        assert suite.attrib["failures"] == str(failures) == str(len(suite.findall(".//failure")))
        assert suite.attrib["skipped"] == str(skipped) == str(len(suite.findall(".//skipped")))
        assert suite.attrib["timestamp"] == "2026-08-21T10:00:00"
    assert len(root.findall(".//failure")) == 1
    assert len(root.findall(".//skipped")) == 1
    assert len(root.findall(".//error")) == 0
    for testcase in root.iter("testcase"):
        check_id, sdk = re.fullmatch(r"(.+)\[(.+)\]", testcase.attrib["name"]).groups()
        assert testcase.attrib["classname"] == check_id.split(".")[0]


def test_failure_body_has_evidence_seed_and_example(sample_results):
    root = parse(sample_results)
    failure = case(root, "backoff.envelope[python@0.25.0]").find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "gap 4 (12800 ms) outside [5500, 10500] ms"
    body = failure.text or ""
    assert "@reproduce_failure('6.100.0', b'AXicY2BgAAAABAAB')" in body
    assert "reset_peer@upstream:t=0.5s" in body
    assert "engine closes with 1006" in body
    assert "gaps: [" in body and "frames: [" in body
    assert "seed-external-workers.md#reconnection-config" in body


def test_declared_nonstrict_and_informational_pass_with_system_out(sample_results):
    root = parse(sample_results)
    declared = case(root, "backoff.envelope[rust@0.3.0]")
    assert declared.find("failure") is None and declared.find("skipped") is None
    assert "declared: bug (iii#1234): Rust SDK retries every 2 s" in declared.findtext("system-out")
    non_strict = case(root, "timeout.default[node@0.22.1]")
    assert non_strict.find("failure") is None
    assert non_strict.findtext("system-out").startswith("NON-STRICT")
    info = case(root, "malformed.survives[node@0.22.1]")
    assert info.find("failure") is None and "INFORMATIONAL" in info.findtext("system-out")
    xpass = case(root, "cleanup.functions_removed[node@0.22.1]")
    assert "unexpected pass" in xpass.findtext("system-out")
    skipped = case(root, "payload.roundtrip[node@0.22.1]").find("skipped")
    assert skipped.attrib["message"] == "driver does not support binary payloads"
    ok = case(root, "replay.order[python@0.25.0]")
    assert len(ok) == 0 and ok.attrib["time"] == "0.500"


def test_hostile_text_still_parses(tmp_path):
    nasty = CheckResult(
        sdk="go@1.0.0",
        check_id="malformed.survives",
        verdict=Verdict.FAILED,
        message='frame "<x>" & \x00\x1b[31m \udcff ]]> done',
        evidence={"raw": "\x07bell"},
        example="<![CDATA[ nope ]]>",
    )
    path = write_junit(tmp_path, [nasty])
    assert path == tmp_path / "junit.xml"
    root = ET.parse(path).getroot()
    validate_junit10(root)
    failure = root.find(".//failure")
    assert failure.attrib["message"].startswith('frame "<x>" & \\x00\\x1b[31m')
    assert "<![CDATA[ nope ]]>" in failure.text


def test_empty_run_is_valid():
    root = parse([])
    assert root.attrib["tests"] == "0" and len(root) == 0
