"""A scriptable iii engine that real SDK workers cannot tell from the real one."""

from . import handshake
from .engine import (
    Connection,
    EngineConfig,
    EngineStartError,
    FakeEngine,
    Intercept,
    InvocationOutcome,
)
from .faults import FrameRule
from .transcript import Event, Transcript, WaitTimeout

__all__ = [
    "Connection",
    "EngineConfig",
    "EngineStartError",
    "Event",
    "FakeEngine",
    "FrameRule",
    "Intercept",
    "InvocationOutcome",
    "Transcript",
    "WaitTimeout",
    "handshake",
]
