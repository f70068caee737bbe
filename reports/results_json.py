"""``DIR/results.json``: the machine-readable record every other report is rendered from.

Layout (schema ``iii-conformance/results/v1``)::

    {"schema": "iii-conformance/results/v1",
     "started_at": "2026-08-21T10:00:00Z", "finished_at": "...",
     "profile": "gate",
     "sdks": {"python@0.25.0": {"name": "python", "version": "0.25.0", ...}},
     "results": [CheckResult.to_dict(), ...],     # sorted by (sdk, check_id)
     "summary": RunSummary.to_dict()}

Writes are atomic (temporary file in the same directory, fsync, ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from .model import CheckResult, RunSummary, result_sort_key, split_sdk_label

SCHEMA = "iii-conformance/results/v1"
RESULTS_FILENAME = "results.json"


class ResultsFormatError(ValueError):
    """results.json is missing, not JSON, or not the expected schema."""


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _iso(value: str | datetime | None) -> str:
    if value is None:
        return utc_now_iso()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


@dataclass
class RunReport:
    """One harness run: its results plus run-level metadata."""

    results: list[CheckResult] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    profile: str = "gate"
    sdks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results = sorted(self.results, key=result_sort_key)
        self.started_at = _iso(self.started_at or None)
        self.finished_at = _iso(self.finished_at or None)
        sdks: dict[str, dict[str, Any]] = {}
        for label in sorted({r.sdk for r in self.results} | set(self.sdks)):
            name, version = split_sdk_label(label)
            info: dict[str, Any] = {"name": name, "version": version}
            info.update(self.sdks.get(label) or {})
            sdks[label] = info
        self.sdks = sdks

    @property
    def summary(self) -> RunSummary:
        return RunSummary.from_results(self.results)

    @property
    def sdk_labels(self) -> list[str]:
        return list(self.sdks)

    @property
    def check_ids(self) -> list[str]:
        return sorted({r.check_id for r in self.results})

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "profile": self.profile,
            "sdks": self.sdks,
            "results": [r.to_dict() for r in self.results],
            "summary": self.summary.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        if not isinstance(data, Mapping):
            raise ResultsFormatError("results document must be a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ResultsFormatError(f"unsupported results schema {schema!r} (want {SCHEMA!r})")
        raw_results = data.get("results")
        if not isinstance(raw_results, list):
            raise ResultsFormatError("results document has no 'results' list")
        try:
            results = [CheckResult.from_dict(item) for item in raw_results]
        except (TypeError, ValueError) as exc:
            raise ResultsFormatError(str(exc)) from exc
        return cls(
            results=results,
            started_at=str(data.get("started_at") or ""),
            finished_at=str(data.get("finished_at") or ""),
            profile=str(data.get("profile") or "gate"),
            sdks={str(k): dict(v or {}) for k, v in (data.get("sdks") or {}).items()},
        )


def _json_default(value: Any) -> Any:
    """Make common non-JSON evidence values serialisable instead of crashing the report."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return repr(value)


def jsonable(value: Any) -> Any:
    """Deep copy of ``value`` that strict JSON parsers accept.

    Non-finite floats become strings (``"NaN"``, ``"Infinity"``), tuples/sets become
    lists, mapping keys become strings, anything else unknown goes through ``repr``.
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return jsonable(_json_default(value))


def dumps(report: RunReport) -> str:
    """Serialise deterministically; non-ASCII is kept unless it cannot be UTF-8 encoded."""
    data = jsonable(report.to_dict())
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from malformed payloads
        text = json.dumps(data, indent=2, ensure_ascii=True, allow_nan=False)
    return text + "\n"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` so readers see either the old or the new file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are artefacts meant to be read
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def _results_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p if p.suffix == ".json" else p / RESULTS_FILENAME


def write_results(
    out_dir: str | os.PathLike[str],
    results: RunReport | Iterable[CheckResult],
    *,
    started_at: str | datetime | None = None,
    finished_at: str | datetime | None = None,
    profile: str | None = None,
    sdks: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``out_dir/results.json`` atomically and return its path.

    ``results`` is either a :class:`RunReport` (keyword metadata then overrides it)
    or an iterable of :class:`CheckResult` (profile defaults to the results' own).
    """
    if isinstance(results, RunReport):
        report = RunReport(
            results=list(results.results),
            started_at=_iso(started_at) if started_at else results.started_at,
            finished_at=_iso(finished_at) if finished_at else results.finished_at,
            profile=profile or results.profile,
            sdks={**results.sdks, **{k: dict(v) for k, v in (sdks or {}).items()}},
        )
    else:
        items = list(results)
        report = RunReport(
            results=items,
            started_at=_iso(started_at) if started_at else "",
            finished_at=_iso(finished_at) if finished_at else "",
            profile=profile or (items[0].profile if items else "gate"),
            sdks={k: dict(v) for k, v in (sdks or {}).items()},
        )
    return atomic_write_text(_results_path(out_dir), dumps(report))


def read_results(path: str | os.PathLike[str]) -> RunReport:
    """Read a results directory (or a ``*.json`` file path) back into a :class:`RunReport`."""
    p = _results_path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ResultsFormatError(f"{p} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ResultsFormatError(f"{p} is not valid JSON: {exc}") from exc
    return RunReport.from_dict(data)
