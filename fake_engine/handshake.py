"""How the engine answers a dial: the knobs behind backoff and reconnect checks.

Each mode is a small frozen dataclass; the server consults ``FakeEngine.handshake`` for every
upgrade request on ``/``. Not listening at all (connection refused) is ``FakeEngine.stop_listening``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accept:
    """Complete the upgrade and speak the protocol (the default)."""


@dataclass(frozen=True)
class Refuse:
    """Answer the upgrade with a plain HTTP error status (e.g. 503) and close."""

    status: int = 503
    body: str = "Service Unavailable\n"


@dataclass(frozen=True)
class CloseBeforeUpgrade:
    """Read the upgrade request, then close the TCP connection without any response."""


@dataclass(frozen=True)
class Stall:
    """Read the upgrade request and never answer; the engine gives up after ``limit_s``.

    The real engine closes a socket that has not finished the upgrade after 10 s
    (``handshake_timeout_ms``); SDKs abandon a stalled open after 10 s too.
    """

    limit_s: float = 10.0


@dataclass(frozen=True)
class CloseAfterOpen:
    """Complete the upgrade, then close at once with this code (no ``workerregistered``)."""

    code: int = 1001
    reason: str = ""


@dataclass(frozen=True)
class AbortAfterOpen:
    """Complete the upgrade, then drop the TCP connection without a close frame."""


HandshakeMode = Accept | Refuse | CloseBeforeUpgrade | Stall | CloseAfterOpen | AbortAfterOpen


def describe(mode: HandshakeMode) -> str:
    return {
        Accept: lambda m: "accept",
        Refuse: lambda m: f"refuse {m.status}",
        CloseBeforeUpgrade: lambda m: "close before upgrade",
        Stall: lambda m: "stall",
        CloseAfterOpen: lambda m: f"close after open {m.code}",
        AbortAfterOpen: lambda m: "abort after open",
    }[type(mode)](mode)


def parse(text: str) -> HandshakeMode:
    """Parse a mode name as used by the CLI: accept, refuse[:STATUS], close-before-upgrade, ..."""
    name, _, arg = text.partition(":")
    name = name.strip().lower().replace("_", "-")
    if name == "accept":
        return Accept()
    if name == "refuse":
        return Refuse(int(arg or 503))
    if name == "close-before-upgrade":
        return CloseBeforeUpgrade()
    if name == "stall":
        return Stall(float(arg) if arg else 10.0)
    if name == "close-after-open":
        return CloseAfterOpen(int(arg or 1001))
    if name == "abort-after-open":
        return AbortAfterOpen()
    raise ValueError(
        f"unknown handshake mode {text!r}: expected accept, refuse[:STATUS], close-before-upgrade,"
        " stall[:SECONDS], close-after-open[:CODE] or abort-after-open"
    )
