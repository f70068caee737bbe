"""A small vocabulary for faults over time, with a text form that replays exactly.

A schedule is a list of :class:`Fault` (when, what, with which arguments). Network faults are
toxiproxy toxics (plus ``down``: the proxy disabled for a while); protocol faults are things only
the engine can do. The text form, one fault per line::

    @0ms latency latency=40 jitter=10 stream=downstream
    @250ms reset_peer timeout=0 stream=upstream
    @400ms drop type=pong times=2

is saved with every failure and parses back to the same schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# kind -> (family, allowed arguments with defaults)
NETWORK: dict[str, dict[str, Any]] = {
    "latency": {"latency": 50, "jitter": 0, "stream": "downstream", "for_ms": None},
    "bandwidth": {"rate": 100, "stream": "downstream", "for_ms": None},
    "slicer": {
        "average_size": 16,
        "size_variation": 8,
        "delay": 100,
        "stream": "downstream",
        "for_ms": None,
    },
    "slow_close": {"delay": 500, "stream": "downstream", "for_ms": None},
    "timeout": {"timeout": 0, "stream": "downstream", "for_ms": None},
    "reset_peer": {"timeout": 0, "stream": "downstream", "for_ms": None},
    "limit_data": {"bytes": 1024, "stream": "downstream", "for_ms": None},
    "half_open": {"side": "client", "delay": 1000, "for_ms": None},
    "down": {"for_ms": 500},
    "clear": {},
}
PROTOCOL: dict[str, dict[str, Any]] = {
    "drop": {"type": None, "direction": "out", "times": 1, "after": 0},
    "delay": {"type": None, "direction": "out", "ms": 200, "times": 1, "after": 0},
    "duplicate": {"type": None, "direction": "out", "times": 1, "after": 0},
    "reorder": {"type": None, "times": 1, "after": 0},
    "close_mid_replay": {"after": 1, "mode": "abort"},
    "refuse": {"status": 503, "times": 1},
    "deaf_pings": {"for_ms": None},
    "malformed": {"payload": "not json"},
    "restart": {"down_ms": 0},
    "disconnect": {"mode": "abort", "code": 1000},
}
KINDS = {**NETWORK, **PROTOCOL}


class ScheduleError(ValueError):
    """A schedule text or fault that does not fit the vocabulary."""


@dataclass(frozen=True, order=True)
class Fault:
    at_ms: int
    kind: str
    args: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ScheduleError(f"unknown fault kind {self.kind!r}; known: {sorted(KINDS)}")
        unknown = {k for k, _ in self.args} - set(KINDS[self.kind])
        if unknown:
            raise ScheduleError(
                f"{self.kind} takes {sorted(KINDS[self.kind])}, not {sorted(unknown)}"
            )
        if self.at_ms < 0:
            raise ScheduleError("a fault cannot happen before the schedule starts")

    @classmethod
    def make(cls, at_ms: int, kind: str, **args: Any) -> Fault:
        return cls(
            int(at_ms), kind, tuple(sorted((k, v) for k, v in args.items() if v is not None))
        )

    @property
    def params(self) -> dict[str, Any]:
        """The fault's arguments with the kind's defaults filled in."""
        out = dict(KINDS[self.kind])
        out.update(self.args)
        return out

    @property
    def is_network(self) -> bool:
        return self.kind in NETWORK

    def text(self) -> str:
        parts = [f"@{self.at_ms}ms", self.kind] + [f"{k}={_fmt(v)}" for k, v in self.args]
        return " ".join(parts)


@dataclass(frozen=True)
class Schedule:
    faults: tuple[Fault, ...] = ()

    def __post_init__(self) -> None:
        # By time; faults at the same time keep the order they were written in.
        object.__setattr__(self, "faults", tuple(sorted(self.faults, key=lambda f: f.at_ms)))

    @property
    def needs_proxy(self) -> bool:
        return any(f.is_network for f in self.faults)

    @property
    def duration_ms(self) -> int:
        return max((f.at_ms + int(f.params.get("for_ms") or 0) for f in self.faults), default=0)

    def text(self) -> str:
        return "\n".join(f.text() for f in self.faults)

    def __str__(self) -> str:
        return "; ".join(f.text() for f in self.faults) or "(no faults)"


_LINE = re.compile(r"^@(\d+)ms\s+([a-z_]+)((?:\s+[a-z_]+=\S+)*)\s*$")


def parse(text: str) -> Schedule:
    """Parse the text form (lines or ``;``-separated); the inverse of :meth:`Schedule.text`."""
    faults = []
    for raw in re.split(r"[;\n]", text):
        line = raw.strip()
        if not line or line.startswith("#") or line == "(no faults)":
            continue
        m = _LINE.match(line)
        if m is None:
            raise ScheduleError(f"cannot parse fault {line!r}: expected '@<ms>ms <kind> k=v ...'")
        args = dict(kv.split("=", 1) for kv in m.group(3).split())
        faults.append(
            Fault.make(int(m.group(1)), m.group(2), **{k: _value(v) for k, v in args.items()})
        )
    return Schedule(tuple(faults))


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _value(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text
