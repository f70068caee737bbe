"""Stdlib-only SVG plots read after a chaos run.

* :func:`backoff_svg` - per reconnect attempt, the acceptable envelope ``[lo_ms, hi_ms]`` as a
  band, the nominal base as a tick and each measured gap as a point; points outside the
  envelope are red and carry ``class="point outside"`` / ``data-outside="true"``.
* :func:`jitter_svg` - histogram of normalised gaps against the expected uniform band
  (left) and the empirical CDF against the uniform CDF with the KS distance (right).

Both return a complete standalone SVG document (``<svg xmlns=...>``); use
:func:`inline_svg` to embed one in HTML without the namespace URL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ._text import xml_safe

SVG_NS = "http://www.w3.org/2000/svg"
# iii Node/Python/Go SDKs: delay * (1 + 0.3 * U(-1, 1)) -> gap / base ~ U[0.7, 1.3].
DEFAULT_JITTER_BAND = (0.7, 1.3)

_STYLE = (
    "text{font-family:system-ui,sans-serif;font-size:11px;fill:#222}"
    ".title{font-size:13px;font-weight:600}"
    ".axis{stroke:#444;stroke-width:1}.grid{stroke:#ddd;stroke-width:1}"
    ".band{fill:#b7e1b0;fill-opacity:.6;stroke:#5a9e50;stroke-width:1}"
    ".base{stroke:#2b6a22;stroke-width:2}"
    ".point{stroke:#fff;stroke-width:1}.inside{fill:#1f5fbf}.outside{fill:#d62728}"
    ".nodata{fill:#888}.bar{fill:#1f5fbf;fill-opacity:.8}.bar.outside{fill:#d62728}"
    ".expected{stroke:#2b6a22;stroke-width:2;stroke-dasharray:5 3;fill:none}"
    ".ecdf{stroke:#1f5fbf;stroke-width:2;fill:none}"
    ".ucdf{stroke:#2b6a22;stroke-width:2;stroke-dasharray:5 3;fill:none}"
    ".ks{stroke:#d62728;stroke-width:2}"
)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


class _Svg:
    def __init__(self, width: int, height: int, title: str) -> None:
        self.width, self.height = width, height
        self.parts: list[str] = []
        self.title = title

    def add(self, tag: str, text: str | None = None, **attrs: Any) -> None:
        rendered = " ".join(
            f"{k.rstrip('_').replace('_', '-')}={quoteattr(xml_safe(v))}"
            for k, v in attrs.items()
            if v is not None
        )
        if text is None:
            self.parts.append(f"<{tag} {rendered}/>")
        else:
            self.parts.append(f"<{tag} {rendered}>{escape(xml_safe(text))}</{tag}>")

    def render(self) -> str:
        head = (
            f'<svg xmlns="{SVG_NS}" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" role="img">'
        )
        return "\n".join(
            [
                head,
                f"<title>{escape(xml_safe(self.title))}</title>",
                f"<style>{_STYLE}</style>",
                *self.parts,
                "</svg>",
            ]
        )


def backoff_svg(
    gaps: Sequence[Mapping[str, Any] | float],
    *,
    title: str = "Reconnect gaps vs backoff envelope",
    width: int = 640,
    height: int = 320,
) -> str:
    """Envelope band per attempt with the measured gaps as points (red when outside).

    Each gap is a mapping ``{attempt, gap_ms, lo_ms, hi_ms, base_ms}``; a bare number is
    taken as ``gap_ms`` of attempt ``index + 1`` with no envelope.  Rows without a usable
    ``gap_ms`` are ignored.
    """
    rows: list[dict[str, float | None]] = []
    for i, g in enumerate(gaps):
        if isinstance(g, Mapping):
            gap = _num(g.get("gap_ms"))
            attempt = _num(g.get("attempt"))
            rows.append(
                {
                    "attempt": attempt if attempt is not None else float(i + 1),
                    "gap_ms": gap,
                    "lo_ms": _num(g.get("lo_ms")),
                    "hi_ms": _num(g.get("hi_ms")),
                    "base_ms": _num(g.get("base_ms")),
                }
            )
        else:
            rows.append(
                {
                    "attempt": float(i + 1),
                    "gap_ms": _num(g),
                    "lo_ms": None,
                    "hi_ms": None,
                    "base_ms": None,
                }
            )
    rows = [r for r in rows if r["gap_ms"] is not None]
    svg = _Svg(width, height, title)
    svg.add("text", title, x=10, y=18, class_="title")
    if not rows:
        svg.add("text", "no gaps recorded", x=width / 2, y=height / 2, class_="nodata")
        return svg.render()

    left, right, top, bottom = 60, 20, 48, 40
    pw, ph = width - left - right, height - top - bottom
    attempts = sorted({r["attempt"] for r in rows})  # type: ignore[type-var]
    values = [v for r in rows for k in ("gap_ms", "lo_ms", "hi_ms", "base_ms") if (v := r[k])]
    y_max = max(values, default=0.0) * 1.1 or 1.0
    slot = pw / len(attempts)

    def x_of(attempt: float) -> float:
        return left + slot * (attempts.index(attempt) + 0.5)

    def y_of(ms: float) -> float:
        return top + ph - ph * max(0.0, ms) / y_max

    for t in _nice_ticks(0.0, y_max):
        y = y_of(t)
        svg.add("line", x1=left, y1=y, x2=left + pw, y2=y, class_="grid")
        svg.add("text", _fmt(t), x=left - 6, y=y + 4, text_anchor="end")
    svg.add("line", x1=left, y1=top + ph, x2=left + pw, y2=top + ph, class_="axis")
    svg.add("line", x1=left, y1=top, x2=left, y2=top + ph, class_="axis")
    svg.add("text", "gap (ms)", x=12, y=top + ph / 2, transform=f"rotate(-90 12 {top + ph / 2})")
    svg.add("text", "attempt", x=left + pw / 2, y=height - 6, text_anchor="middle")

    band_w = min(slot * 0.6, 40.0)
    seen: set[float] = set()
    for r in rows:
        a = r["attempt"]
        assert a is not None
        if a in seen:
            continue
        seen.add(a)
        x = x_of(a)
        svg.add("text", _fmt(a), x=x, y=top + ph + 14, text_anchor="middle")
        lo, hi, base = r["lo_ms"], r["hi_ms"], r["base_ms"]
        if lo is not None and hi is not None:
            y_hi, y_lo = y_of(max(lo, hi)), y_of(min(lo, hi))
            svg.add(
                "rect",
                x=x - band_w / 2,
                y=y_hi,
                width=band_w,
                height=max(1.0, y_lo - y_hi),
                class_="band",
                data_attempt=_fmt(a),
            )
        if base is not None:
            y = y_of(base)
            svg.add("line", x1=x - band_w / 2, y1=y, x2=x + band_w / 2, y2=y, class_="base")

    outside_count = 0
    for r in rows:
        gap, lo, hi = r["gap_ms"], r["lo_ms"], r["hi_ms"]
        assert gap is not None and r["attempt"] is not None
        has_env = lo is not None and hi is not None
        outside = has_env and not (min(lo, hi) <= gap <= max(lo, hi))  # type: ignore[type-var]
        outside_count += outside
        tooltip = f"attempt {_fmt(r['attempt'])}: gap {_fmt(gap)} ms"
        if has_env:
            tooltip += f" (envelope {_fmt(lo)}..{_fmt(hi)} ms)"  # type: ignore[arg-type]
        svg.parts.append(
            f'<circle class="point {"outside" if outside else "inside"}" '
            f'data-outside="{"true" if outside else "false"}" '
            f'cx="{x_of(r["attempt"]):.1f}" cy="{y_of(gap):.1f}" r="4.5">'
            f"<title>{escape(tooltip)}</title></circle>"
        )
    legend = f"{len(rows)} gaps, {outside_count} outside envelope"
    svg.add("text", legend, x=10, y=34)
    return svg.render()


def ks_distance(values: Sequence[float], lo: float, hi: float) -> float:
    """Two-sided KS distance between the sample and U[lo, hi]."""
    xs = sorted(values)
    n = len(xs)
    if n == 0 or hi <= lo:
        return 0.0
    d = 0.0
    for i, x in enumerate(xs):
        f = min(1.0, max(0.0, (x - lo) / (hi - lo)))
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def jitter_svg(
    normalised_values: Sequence[float],
    lo: float,
    hi: float,
    *,
    bins: int | None = None,
    title: str = "Normalised reconnect gaps vs uniform jitter band",
    width: int = 760,
    height: int = 300,
) -> str:
    """Histogram of normalised gaps vs the expected U[lo, hi] band, plus ECDF vs uniform CDF.

    Bins are aligned to ``lo`` so the band is covered exactly; extra bins are added on
    either side for values outside the band (drawn red, ``class="bar outside"``).
    """
    values = [v for v in (_num(x) for x in normalised_values) if v is not None]
    lo, hi = (lo, hi) if lo <= hi else (hi, lo)
    svg = _Svg(width, height, title)
    svg.add("text", title, x=10, y=18, class_="title")
    if not values or hi <= lo:
        svg.add("text", "no normalised gaps recorded", x=width / 2, y=height / 2, class_="nodata")
        return svg.render()

    n = len(values)
    k = bins or max(4, min(20, math.ceil(math.sqrt(n))))
    w = (hi - lo) / k
    below = math.ceil((lo - min(values)) / w) if min(values) < lo else 0
    above = math.ceil((max(values) - hi) / w) if max(values) > hi else 0
    below, above = min(below, 20), min(above, 20)  # keep wild outliers from flattening it
    x0, x1 = lo - below * w, hi + above * w
    counts = [0] * (below + k + above)
    for v in values:
        idx = int((min(max(v, x0), x1) - x0) // w)
        counts[min(idx, len(counts) - 1)] += 1
    expected = n * w / (hi - lo)

    top, bottom, gap = 52, 40, 50
    panel_w = (width - 60 - 20 - gap) / 2
    ph = height - top - bottom
    y_max = max(max(counts), expected) * 1.15

    # Left panel: histogram.
    left = 50.0

    def hx(v: float) -> float:
        return left + panel_w * (v - x0) / (x1 - x0)

    def hy(c: float) -> float:
        return top + ph - ph * c / y_max

    for t in _nice_ticks(0.0, y_max, 4):
        svg.add("line", x1=left, y1=hy(t), x2=left + panel_w, y2=hy(t), class_="grid")
        svg.add("text", _fmt(t), x=left - 6, y=hy(t) + 4, text_anchor="end")
    for i, c in enumerate(counts):
        b_lo = x0 + i * w
        centre = b_lo + w / 2
        outside = centre < lo or centre > hi
        if c:
            svg.parts.append(
                f'<rect class="bar{" outside" if outside else ""}" '
                f'data-outside="{"true" if outside else "false"}" '
                f'x="{hx(b_lo) + 0.5:.1f}" y="{hy(c):.1f}" '
                f'width="{max(1.0, hx(b_lo + w) - hx(b_lo) - 1):.1f}" '
                f'height="{hy(0) - hy(c):.1f}"><title>{_fmt(b_lo)}..{_fmt(b_lo + w)}: '
                f"{c}</title></rect>"
            )
    svg.parts.append(
        f'<polyline class="expected" points="{hx(lo):.1f},{hy(0):.1f} {hx(lo):.1f},'
        f'{hy(expected):.1f} {hx(hi):.1f},{hy(expected):.1f} {hx(hi):.1f},{hy(0):.1f}"/>'
    )
    svg.add("line", x1=left, y1=hy(0), x2=left + panel_w, y2=hy(0), class_="axis")
    for t in sorted({round(v, 9) for v in (x0, lo, (lo + hi) / 2, hi, x1)}):
        svg.add("text", _fmt(t), x=hx(t), y=top + ph + 14, text_anchor="middle")
    svg.add(
        "text",
        "normalised gap (gap / base)",
        x=left + panel_w / 2,
        y=height - 6,
        text_anchor="middle",
    )
    n_out = sum(1 for v in values if v < lo or v > hi)
    svg.add(
        "text", f"histogram: n={n}, {n_out} outside [{_fmt(lo)}, {_fmt(hi)}]", x=left, y=top - 10
    )

    # Right panel: ECDF vs uniform CDF.
    left2 = left + panel_w + gap
    c0, c1 = min(x0, min(values)), max(x1, max(values))

    def cx(v: float) -> float:
        return left2 + panel_w * (v - c0) / (c1 - c0)

    def cy(p: float) -> float:
        return top + ph - ph * p

    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        svg.add("line", x1=left2, y1=cy(p), x2=left2 + panel_w, y2=cy(p), class_="grid")
        svg.add("text", _fmt(p), x=left2 - 6, y=cy(p) + 4, text_anchor="end")
    svg.add("line", x1=left2, y1=cy(0), x2=left2 + panel_w, y2=cy(0), class_="axis")
    svg.parts.append(
        f'<polyline class="ucdf" points="{cx(c0):.1f},{cy(0):.1f} {cx(lo):.1f},{cy(0):.1f} '
        f'{cx(hi):.1f},{cy(1):.1f} {cx(c1):.1f},{cy(1):.1f}"/>'
    )
    xs = sorted(values)
    pts = [f"{cx(c0):.1f},{cy(0):.1f}"]
    for i, x in enumerate(xs):
        pts.append(f"{cx(x):.1f},{cy(i / n):.1f}")
        pts.append(f"{cx(x):.1f},{cy((i + 1) / n):.1f}")
    pts.append(f"{cx(c1):.1f},{cy(1):.1f}")
    svg.parts.append(f'<polyline class="ecdf" points="{" ".join(pts)}"/>')
    d = ks_distance(values, lo, hi)
    for t in (lo, hi):
        svg.add("text", _fmt(t), x=cx(t), y=top + ph + 14, text_anchor="middle")
    svg.add("text", "empirical CDF (solid) vs uniform CDF (dashed)", x=left2, y=top - 10)
    svg.add("text", f"KS D = {d:.3f}", x=left2 + panel_w, y=top + ph - 6, text_anchor="end")
    return svg.render()


def inline_svg(svg: str) -> str:
    """Strip the XML namespace URL so the SVG can sit inside HTML5 without any URL."""
    return svg.replace(f' xmlns="{SVG_NS}"', "", 1)


def _band(evidence: Mapping[str, Any]) -> tuple[float, float]:
    for key in ("normalised_band", "normalized_band", "band", "expected_band"):
        band = evidence.get(key)
        if isinstance(band, Sequence) and not isinstance(band, str) and len(band) == 2:
            lo, hi = _num(band[0]), _num(band[1])
            if lo is not None and hi is not None:
                return lo, hi
    lo, hi = _num(evidence.get("lo")), _num(evidence.get("hi"))
    if lo is not None and hi is not None:
        return lo, hi
    jitter = _num(evidence.get("jitter") or evidence.get("jitter_factor"))
    if jitter is not None:
        return 1.0 - jitter, 1.0 + jitter
    return DEFAULT_JITTER_BAND


def evidence_plots(evidence: Mapping[str, Any], *, title: str = "") -> dict[str, str]:
    """SVGs for an evidence dict: ``{"backoff": svg}`` when it has ``gaps``,
    ``{"jitter": svg}`` when it has ``normalised`` (or ``normalized``) values.

    The jitter band comes from ``normalised_band``/``band`` ``[lo, hi]``, ``lo``/``hi``,
    or ``jitter`` (J -> ``[1-J, 1+J]``); default :data:`DEFAULT_JITTER_BAND`.
    """
    out: dict[str, str] = {}
    prefix = f"{title}: " if title else ""
    gaps = evidence.get("gaps")
    if isinstance(gaps, Sequence) and not isinstance(gaps, str) and gaps:
        out["backoff"] = backoff_svg(gaps, title=f"{prefix}reconnect gaps vs envelope")
    values = evidence.get("normalised", evidence.get("normalized"))
    if isinstance(values, Sequence) and not isinstance(values, str) and values:
        lo, hi = _band(evidence)
        out["jitter"] = jitter_svg(
            values, lo, hi, title=f"{prefix}normalised gaps vs U[{_fmt(lo)}, {_fmt(hi)}]"
        )
    return out
