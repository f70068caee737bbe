"""Result model shared by every report writer.

A :class:`CheckResult` is one verdict of one check against one SDK.  A
:class:`RunSummary` aggregates many of them and owns the exit-code contract:

* ``EXIT_OK`` (0): every verdict is OK / NON-STRICT / INFORMATIONAL / SKIPPED,
  or FAILED *with* a declared known deviation from the expectation manifest;
* ``EXIT_FAILED`` (1): at least one undeclared FAILED;
* ``EXIT_HARNESS_ERROR`` (2): the harness itself could not run (set by callers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_HARNESS_ERROR = 2

Profile = Literal["gate", "nightly"]
PROFILES: tuple[str, ...] = ("gate", "nightly")


class Verdict(str, Enum):
    """Autobahn-style graded verdicts (UNIMPLEMENTED is expressed as SKIPPED)."""

    OK = "OK"
    NON_STRICT = "NON-STRICT"
    INFORMATIONAL = "INFORMATIONAL"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"

    def __str__(self) -> str:  # "NON-STRICT", not "Verdict.NON_STRICT"
        return self.value

    @classmethod
    def parse(cls, value: str | Verdict) -> Verdict:
        """Accept ``"NON-STRICT"``, ``"non_strict"``, ``"NON_STRICT"`` or a member."""
        if isinstance(value, Verdict):
            return value
        text = str(value).strip().upper().replace("_", "-")
        for member in cls:
            if member.value == text:
                return member
        raise ValueError(f"unknown verdict {value!r}; expected one of {[m.value for m in cls]}")


class Status(str, Enum):
    """What a result *means* for the gate, after applying the manifest.

    Ordered from best to worst by :attr:`rank`; used for the worst-verdict matrix
    and for colouring cells.
    """

    OK = "OK"
    XPASS = "XPASS"  # declared deviation that passed: surfaced, never red
    SKIPPED = "SKIPPED"
    INFORMATIONAL = "INFORMATIONAL"
    NON_STRICT = "NON-STRICT"
    DECLARED = "DECLARED"  # FAILED but declared in the manifest (xfail): green gate
    FAILED = "FAILED"  # undeclared FAILED: the only red

    def __str__(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        return _STATUS_ORDER.index(self)

    @property
    def label(self) -> str:
        return _STATUS_LABELS[self]


_STATUS_ORDER = [
    Status.OK,
    Status.XPASS,
    Status.SKIPPED,
    Status.INFORMATIONAL,
    Status.NON_STRICT,
    Status.DECLARED,
    Status.FAILED,
]
_STATUS_LABELS = {
    Status.OK: "OK",
    Status.XPASS: "OK (unexpected pass)",
    Status.SKIPPED: "SKIPPED",
    Status.INFORMATIONAL: "INFORMATIONAL",
    Status.NON_STRICT: "NON-STRICT",
    Status.DECLARED: "FAILED (declared)",
    Status.FAILED: "FAILED",
}


def worst_status(statuses: Iterable[Status]) -> Status | None:
    """The worst status of ``statuses`` (``None`` when empty)."""
    worst: Status | None = None
    for status in statuses:
        if worst is None or status.rank > worst.rank:
            worst = status
    return worst


def family_of(check_id: str) -> str:
    """``"backoff.envelope"`` -> ``"backoff"``; an id without a dot is its own family."""
    return check_id.split(".", 1)[0]


def split_sdk_label(sdk: str) -> tuple[str, str | None]:
    """``"python@0.25.0"`` -> ``("python", "0.25.0")``; ``"rust"`` -> ``("rust", None)``."""
    name, sep, version = sdk.partition("@")
    return name, (version if sep and version else None)


@dataclass
class CheckResult:
    sdk: str
    check_id: str
    verdict: Verdict
    contract_ref: str = ""
    title: str = ""
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    seed: str | None = None
    example: str | None = None
    duration_s: float = 0.0
    declared: str | None = None
    unexpected_pass: bool = False
    profile: str = "gate"
    fault_schedule: str | None = None

    def __post_init__(self) -> None:
        self.verdict = Verdict.parse(self.verdict)
        if self.evidence is None:
            self.evidence = {}
        try:
            duration = float(self.duration_s)
        except (TypeError, ValueError):
            duration = 0.0
        self.duration_s = duration if math.isfinite(duration) and duration >= 0 else 0.0

    @property
    def family(self) -> str:
        return family_of(self.check_id)

    @property
    def is_declared_failure(self) -> bool:
        return self.verdict is Verdict.FAILED and bool(self.declared)

    @property
    def is_blocking(self) -> bool:
        """True for an undeclared FAILED: the only thing that turns the gate red."""
        return self.verdict is Verdict.FAILED and not self.declared

    @property
    def status(self) -> Status:
        if self.verdict is Verdict.FAILED:
            return Status.DECLARED if self.declared else Status.FAILED
        if self.verdict is Verdict.OK:
            return Status.XPASS if self.unexpected_pass else Status.OK
        return Status(self.verdict.value)

    @property
    def reproduction(self) -> str | None:
        """One line that lets a human re-run this case (seed and fault schedule)."""
        parts = []
        if self.seed:
            parts.append(self.seed)
        if self.fault_schedule:
            parts.append(f"fault_schedule={self.fault_schedule}")
        return "; ".join(parts) if parts else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sdk": self.sdk,
            "check_id": self.check_id,
            "family": self.family,
            "verdict": self.verdict.value,
            "contract_ref": self.contract_ref,
            "title": self.title,
            "message": self.message,
            "evidence": self.evidence,
            "seed": self.seed,
            "example": self.example,
            "duration_s": self.duration_s,
            "declared": self.declared,
            "unexpected_pass": self.unexpected_pass,
            "profile": self.profile,
            "fault_schedule": self.fault_schedule,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        """Inverse of :meth:`to_dict`; unknown keys (and ``family``) are ignored."""
        missing = [k for k in ("sdk", "check_id", "verdict") if k not in data]
        if missing:
            raise ValueError(f"check result is missing {missing}: {dict(data)!r}")
        return cls(
            sdk=str(data["sdk"]),
            check_id=str(data["check_id"]),
            verdict=Verdict.parse(data["verdict"]),
            contract_ref=str(data.get("contract_ref") or ""),
            title=str(data.get("title") or ""),
            message=str(data.get("message") or ""),
            evidence=dict(data.get("evidence") or {}),
            seed=data.get("seed"),
            example=data.get("example"),
            duration_s=data.get("duration_s") or 0.0,
            declared=data.get("declared"),
            unexpected_pass=bool(data.get("unexpected_pass", False)),
            profile=str(data.get("profile") or "gate"),
            fault_schedule=data.get("fault_schedule"),
        )


def result_sort_key(result: CheckResult) -> tuple[str, str, str, str]:
    """Deterministic report order: (sdk, check_id), ties broken by schedule and seed."""
    return (result.sdk, result.check_id, result.fault_schedule or "", result.seed or "")


@dataclass
class RunSummary:
    total: int = 0
    ok: int = 0
    non_strict: int = 0
    informational: int = 0
    failed: int = 0  # undeclared FAILED
    failed_declared: int = 0
    skipped: int = 0
    unexpected_passes: int = 0
    duration_s: float = 0.0
    blocking: list[tuple[str, str]] = field(default_factory=list)  # (sdk, check_id)

    @classmethod
    def from_results(cls, results: Iterable[CheckResult]) -> RunSummary:
        summary = cls()
        for r in sorted(results, key=result_sort_key):
            summary.total += 1
            summary.duration_s += r.duration_s
            if r.verdict is Verdict.OK:
                summary.ok += 1
            elif r.verdict is Verdict.NON_STRICT:
                summary.non_strict += 1
            elif r.verdict is Verdict.INFORMATIONAL:
                summary.informational += 1
            elif r.verdict is Verdict.SKIPPED:
                summary.skipped += 1
            elif r.declared:
                summary.failed_declared += 1
            else:
                summary.failed += 1
                summary.blocking.append((r.sdk, r.check_id))
            if r.unexpected_pass:
                summary.unexpected_passes += 1
        return summary

    @property
    def passed(self) -> bool:
        return self.failed == 0

    def exit_code(self, *, empty_is_error: bool = False) -> int:
        """0 unless an undeclared FAILED exists (1).

        With ``empty_is_error`` a run that produced no results at all returns
        ``EXIT_HARNESS_ERROR`` so a misconfigured gate cannot silently pass.
        """
        if empty_is_error and self.total == 0:
            return EXIT_HARNESS_ERROR
        return EXIT_FAILED if self.failed else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "ok": self.ok,
            "non_strict": self.non_strict,
            "informational": self.informational,
            "failed": self.failed,
            "failed_declared": self.failed_declared,
            "skipped": self.skipped,
            "unexpected_passes": self.unexpected_passes,
            "duration_s": round(self.duration_s, 6),
            "blocking": [f"{check}[{sdk}]" for sdk, check in self.blocking],
            "exit_code": self.exit_code(),
        }

    def one_line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict}: {self.total} results, {self.ok} ok, {self.non_strict} non-strict, "
            f"{self.informational} informational, {self.skipped} skipped, "
            f"{self.failed_declared} declared failures, {self.unexpected_passes} unexpected "
            f"passes, {self.failed} FAILED (exit {self.exit_code()})"
        )
