"""Protocol-level faults: rules that drop, delay, duplicate, hold back or cut on chosen frames.

A rule matches frames by direction, message type, connection and position (the k-th frame of a
connection in that direction), and fires at most ``times`` times. The engine consults the rules on
every frame it sends (``out``) and every decoded frame it receives (``in``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("drop", "delay", "duplicate", "hold", "close", "abort")


@dataclass
class FrameRule:
    """``hold`` keeps the frame back and releases it after the next frame: a reordering.
    Inbound ``close``/``abort`` cut the connection right after the matching frame is handled."""

    action: str
    direction: str = "out"  # "out": engine -> worker; "in": worker -> engine
    type: str | None = None
    conn: int | None = None
    after: int = 0  # only frames with index > after (1-based, per connection and direction)
    times: int | None = 1  # None: every matching frame
    delay_s: float = 0.0
    close_code: int = 1000
    next_worker: bool = False  # aim at the next worker connection the engine accepts
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown frame fault {self.action!r}; expected one of {ACTIONS}")
        if self.direction not in ("in", "out"):
            raise ValueError("direction must be 'in' or 'out'")

    def matches(self, direction: str, conn: int, index: int, message: dict[str, Any]) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.next_worker and self.conn is None:
            return False  # not bound to a connection yet
        return (
            direction == self.direction
            and (self.conn is None or self.conn == conn)
            and index > self.after
            and (self.type is None or message.get("type") == self.type)
        )

    def describe(self) -> str:
        what = self.type or "any frame"
        where = f" after frame {self.after}" if self.after else ""
        extra = f" {self.delay_s * 1000:.0f}ms" if self.action == "delay" else ""
        return f"{self.action}{extra} {self.direction} {what}{where}"


def first_match(
    rules: list[FrameRule], direction: str, conn: int, index: int, message: dict[str, Any]
) -> FrameRule | None:
    for rule in rules:
        if rule.matches(direction, conn, index, message):
            rule.fired += 1
            return rule
    return None
