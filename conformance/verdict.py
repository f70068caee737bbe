"""How a check states its verdict and evidence.

A check is a pytest test marked with :func:`check`. It passes (OK), fails an assertion (FAILED),
skips (SKIPPED), or calls ``verdict.non_strict(...)`` / ``verdict.informational(...)`` to grade a
pass. Evidence (frames, timestamps, gaps...) is attached with ``verdict.evidence(...)`` as it is
gathered, so a failure carries it too.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from fake_engine import FakeEngine
from fake_engine.transcript import FRAME, Transcript

MAX_FRAMES = 120


def check(check_id: str, *, title: str, contract: str, nightly: bool = False) -> Any:
    """Mark a test as conformance check ``check_id`` verifying the ``contract`` line."""
    marks = [pytest.mark.iii_check(check_id, title=title, contract=contract)]
    if nightly:
        marks.append(pytest.mark.nightly)

    def deco(fn: Any) -> Any:
        inner = getattr(getattr(fn, "hypothesis", None), "inner_test", fn)
        if inspect.iscoroutinefunction(inner):
            marks.append(pytest.mark.asyncio)
        for m in marks:
            fn = m(fn)
        return fn

    return deco


@dataclass
class VerdictRecorder:
    """Per-check state collected by the ``verdict`` fixture."""

    grade: str = "OK"  # OK | NON-STRICT | INFORMATIONAL
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    example: str | None = None
    fault_schedule: str | None = None
    engines: list[FakeEngine] = field(default_factory=list)

    def evidence(self, **kw: Any) -> None:
        self.data.update(kw)

    def non_strict(self, message: str, **evidence: Any) -> None:
        """It works, but differs from the letter of the contract."""
        self.grade, self.message = "NON-STRICT", message
        self.data.update(evidence)

    def informational(self, message: str, **evidence: Any) -> None:
        """A difference worth knowing that no contract line decides."""
        if self.grade == "OK":
            self.grade, self.message = "INFORMATIONAL", message
        else:
            self.message += f"; {message}"
        self.data.update(evidence)

    def set_example(self, example: Any) -> None:
        """Record the generated input of the running hypothesis example; the last one run is
        the minimal failing example when the check fails."""
        self.example = example if isinstance(example, str) else repr(example)

    def note(self, message: str) -> None:
        self.message = f"{self.message}; {message}" if self.message else message

    def watch(self, engine: FakeEngine) -> None:
        """Attach this engine's transcript to the evidence (the latest scenario's only, so a
        hypothesis failure shows the minimal example's frames)."""
        self.engines = [engine]

    def schedule(self, text: str) -> None:
        self.fault_schedule = text

    def finish(self, failed: bool) -> dict[str, Any]:
        ev = dict(self.data)
        if self.engines:
            ev.setdefault(
                "transcript", transcript_excerpt(self.engines, MAX_FRAMES if failed else 30)
            )
        return ev


def compact_frame(ev: Any, t0: int) -> dict[str, Any]:
    out: dict[str, Any] = {"t_ms": round((ev.t_ns - t0) / 1e6, 3), "conn": ev.conn, "kind": ev.kind}
    if ev.kind == FRAME:
        out["dir"] = ev.direction
        if ev.message is not None:
            out["msg"] = ev.message
        elif ev.error:
            out["error"] = ev.error
            out["raw"] = (ev.raw or "")[:200]
        else:
            out["opcode"] = ev.opcode
    elif ev.detail:
        out["detail"] = ev.detail
    return out


def transcript_excerpt(engines: list[FakeEngine], limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` events of the engines' transcripts, times relative to the first."""
    events = sorted(
        (e for eng in engines for e in eng.transcript.events if e.kind != "http_request"),
        key=lambda e: e.t_ns,
    )
    if not events:
        return []
    t0 = events[0].t_ns
    return [compact_frame(e, t0) for e in events[-limit:]]


def frames_of(transcript: Transcript, conn: int, direction: str = "in") -> list[dict[str, Any]]:
    return transcript.messages(conn=conn, direction=direction)
