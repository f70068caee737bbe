from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from reports.plots import (
    DEFAULT_JITTER_BAND,
    SVG_NS,
    backoff_svg,
    evidence_plots,
    inline_svg,
    jitter_svg,
    ks_distance,
)

NS = {"svg": SVG_NS}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{{{SVG_NS}}}svg"
    return root


def points(root: ET.Element) -> list[ET.Element]:
    return root.findall(".//svg:circle", NS)


@pytest.mark.parametrize("outside", [(), (4,), (1, 3, 6)])
def test_backoff_points_outside_envelope_are_marked(outside, make_gaps):
    root = parse(backoff_svg(make_gaps(outside)))
    circles = points(root)
    assert len(circles) == 6
    marked = [c for c in circles if "outside" in c.attrib["class"].split()]
    assert len(marked) == len(outside)
    assert all(c.attrib["data-outside"] == "true" for c in marked)
    assert len(root.findall(".//svg:rect[@class='band']", NS)) == 6
    assert f"{len(outside)} outside envelope" in "".join(root.itertext())


def test_backoff_boundaries_inclusive_and_bad_rows_ignored():
    gaps = [
        {"attempt": 1, "gap_ms": 1300, "lo_ms": 700, "hi_ms": 1300, "base_ms": 1000},
        {"attempt": 2, "gap_ms": 1400, "lo_ms": 1400, "hi_ms": 2600, "base_ms": 2000},
        {"attempt": 3, "gap_ms": None, "lo_ms": 1, "hi_ms": 2},
        {"attempt": 4, "gap_ms": "nope"},
        {"attempt": 5, "gap_ms": math.nan},
        {"attempt": 6, "gap_ms": 1399.9, "lo_ms": 1400, "hi_ms": 2600},
    ]
    circles = points(parse(backoff_svg(gaps)))
    assert [c.attrib["data-outside"] for c in circles] == ["false", "false", "true"]


def test_backoff_bare_numbers_empty_and_hostile_title():
    root = parse(backoff_svg([1000, 2100.5, 3900], title="<b>&'\"\x00"))
    assert len(points(root)) == 3
    assert all(c.attrib["data-outside"] == "false" for c in points(root))
    empty = parse(backoff_svg([]))
    assert points(empty) == [] and "no gaps recorded" in "".join(empty.itertext())


def test_jitter_histogram_marks_out_of_band_values():
    values = [0.7 + 0.6 * i / 29 for i in range(30)] + [0.5, 1.45, 9.0]
    root = parse(jitter_svg(values, 0.7, 1.3))
    bars = root.findall(".//svg:rect", NS)
    outside = [b for b in bars if b.attrib.get("data-outside") == "true"]
    inside = [b for b in bars if b.attrib.get("data-outside") == "false"]
    assert outside and inside
    assert all("outside" in b.attrib["class"].split() for b in outside)
    counts = [int(b.find("svg:title", NS).text.rsplit(":", 1)[1]) for b in bars]
    assert sum(counts) == len(values)
    assert sum(int(b.find("svg:title", NS).text.rsplit(":", 1)[1]) for b in outside) == 3
    assert root.findall(".//svg:polyline[@class='ecdf']", NS)
    assert root.findall(".//svg:polyline[@class='ucdf']", NS)
    assert "3 outside [0.7, 1.3]" in "".join(root.itertext())


def test_jitter_all_inside_and_degenerate_inputs():
    root = parse(jitter_svg([0.75, 0.9, 1.0, 1.1, 1.25], 1.3, 0.7))  # swapped band
    assert not [b for b in root.findall(".//svg:rect", NS) if b.get("data-outside") == "true"]
    assert "no normalised" in "".join(parse(jitter_svg([], 0.7, 1.3)).itertext())
    assert "no normalised" in "".join(parse(jitter_svg([1.0], 1.0, 1.0)).itertext())
    parse(jitter_svg([1.0, math.inf, None, "x"], 0.7, 1.3))  # type: ignore[list-item]


def test_ks_distance():
    assert ks_distance([1.0] * 10, 0.7, 1.3) == pytest.approx(0.5)
    assert ks_distance([0.7 + 0.6 * (i + 0.5) / 100 for i in range(100)], 0.7, 1.3) <= 0.0051
    assert ks_distance([], 0.7, 1.3) == 0.0


def test_evidence_plots_and_inline(make_gaps):
    plots = evidence_plots({"gaps": make_gaps(), "normalised": [1.0, 1.1], "jitter": 0.2})
    assert set(plots) == {"backoff", "jitter"}
    assert "U[0.8, 1.2]" in plots["jitter"]
    assert "U[0.7, 1.3]" in evidence_plots({"normalized": [1.0]})["jitter"]
    assert DEFAULT_JITTER_BAND == (0.7, 1.3)
    assert "U[0.9, 1.1]" in evidence_plots({"normalised": [1.0], "band": [0.9, 1.1]})["jitter"]
    assert evidence_plots({"gaps": [], "frames": [1]}) == {}
    inlined = inline_svg(plots["backoff"])
    assert "http" not in inlined and inlined.startswith("<svg ")
