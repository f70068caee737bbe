"""liveness.*: a worker notices an engine that went deaf and reconnects (nightly: 40-60 s each).

The engine never pings; liveness is the SDKs' own WebSocket keepalive (iii-protocol.md §9):
Python (``websockets`` defaults) pings every 20 s and closes with 1011 when a pong is not back
within 20 s; Node pings every 20 s and ``terminate()``s the socket 60 s after the last inbound
frame, ping or pong. Here the engine stops answering pings and sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from conformance.scenario import FAST, scenario
from conformance.verdict import check
from fake_engine import Connection
from fake_engine.transcript import DISCONNECT, IN, OUT, Event, Transcript

ECHO = "lv::echo"
# Timer drift of a 20 s / 60 s keepalive is milliseconds (sdk-behaviour.md §8: pings at 19.99 s and
# 39.99 s, terminate 60.03 s after the last inbound frame). 1 s absorbs CI scheduling; the lower
# side allows Node's millisecond loop clock.
LATE_S = 1.0
EARLY_S = 0.05


@dataclass(frozen=True)
class Keepalive:
    """Where a language's documented deadline starts, and how long it is."""

    rule: str
    after_s: float
    reference: Callable[[Transcript, int, Event], Event | None]


def first_unanswered_ping(tr: Transcript, conn: int, end: Event) -> Event | None:
    return next(
        (
            e
            for e in tr.frames(conn=conn, direction=IN)
            if e.opcode == "ping" and e.detail.get("answered") is False
        ),
        None,
    )


def last_engine_frame(tr: Transcript, conn: int, end: Event) -> Event | None:
    sent = [e for e in tr.frames(conn=conn, direction=OUT) if e.t_ns < end.t_ns]
    return sent[-1] if sent else None


KEEPALIVE = {
    "python": Keepalive(
        "first unanswered WS ping + 20 s (ping_timeout)", 20.0, first_unanswered_ping
    ),
    "node": Keepalive("last inbound frame + 60 s (WS_IDLE_TIMEOUT_MS)", 60.0, last_engine_frame),
}


def detection(tr: Transcript, conn: Connection, end: Event) -> Event:
    """The worker's close frame if it sent one, else the end of the connection."""
    closes = [e for e in tr.frames(conn=conn.id, direction=IN) if e.opcode == "close"]
    return closes[0] if closes else end


@check(
    "liveness.deaf_engine",
    title="An engine that stops answering pings is detected within the keepalive bound; the worker reconnects",
    contract="iii-protocol.md#9 Keepalive: Python closes 1011 20 s after an unanswered ping; Node terminates 60 s after the last inbound frame",
    nightly=True,
)
async def test_deaf_engine_detected(iii_sdk, verdict) -> None:
    keepalive = KEEPALIVE.get(iii_sdk.spec.language)
    if keepalive is None:
        pytest.skip(f"no documented keepalive bound for {iii_sdk.spec.language} SDKs")
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(reconnection=FAST, functions={ECHO: "echo"})
        conn = await s.connection(w, (ECHO,))
        tr = s.engine.transcript
        s.engine.set_answer_pings(False)
        end = await tr.wait_for(
            lambda e: e.kind == DISCONNECT and e.conn == conn.id,
            keepalive.after_s * 2 + 10,
            f"the worker to give up on connection {conn.id}",
        )
        s.engine.set_answer_pings(True)
        seen = detection(tr, conn, end)
        ref = keepalive.reference(tr, conn.id, end)
        pings = [
            round((e.t_ns - conn.connected_ns) / 1e9, 3)
            for e in tr.frames(conn=conn.id, direction=IN)
            if e.opcode == "ping"
        ]
        verdict.evidence(
            rule=keepalive.rule,
            pings_s_after_open=pings,
            detected_s_after_open=round((seen.t_ns - conn.connected_ns) / 1e9, 3),
            reference_s_after_open=round((ref.t_ns - conn.connected_ns) / 1e9, 3) if ref else None,
            close=end.detail,
        )
        assert ref is not None, f"no reference event for {keepalive.rule}: pings {pings}"
        took = (seen.t_ns - ref.t_ns) / 1e9
        verdict.evidence(detected_after_reference_s=round(took, 3))
        assert keepalive.after_s - EARLY_S <= took <= keepalive.after_s + LATE_S, (
            f"the deaf engine was detected {took:.2f} s after the reference ({keepalive.rule}); "
            f"the documented bound is {keepalive.after_s} s (+{LATE_S} s)"
        )
        new = await s.reconnected(w, conn, (ECHO,), timeout=10)
        out = await s.engine.invoke(ECHO, {"after": "keepalive"}, timeout=5)
        verdict.evidence(
            reconnected_s_after_detection=round((new.connected_ns - seen.t_ns) / 1e9, 3)
        )
        assert out.ok and out.result == {"after": "keepalive"}, (
            f"after the keepalive reconnect the worker answered {out.error}"
        )
