"""malformed.*: frames a worker cannot use never stop it serving on the same connection.

The engine writes them with ``send_raw`` (invalid JSON, non-object JSON, unknown types such as the
engine's own ``error``, missing or mistyped fields, binary frames, a result for an invocation
nobody made, an invoke for a function the worker does not have, megabyte frames). After each one
the engine invokes an echo function on the **same** connection: a reconnect, a dead worker or a
wrong answer is FAILED (iii-protocol.md §11.14). Every frame is a valid WebSocket frame: text frames
are valid UTF-8 (an invalid one is a WebSocket protocol error the client must fail on, RFC 6455
§8.1), so only the iii layer is malformed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from conformance.profiles import examples
from conformance.scenario import scenario
from conformance.verdict import check
from fake_engine.transcript import DISCONNECT

ECHO = "mf::echo"
Garbage = tuple[str, str | bytes]  # (kind, frame); bytes are sent as a binary frame

# Types a worker may receive but must not act on when they are malformed or not meant for it.
# Left out on purpose: `workerregistered` (a valid one changes the worker's identity) and
# `registrationrejected` (fatal by contract, rejection.*).
NEAR_MISS_TYPES = (
    "invokefunction",
    "invocationresult",
    "registertrigger",
    "unregistertrigger",
    "triggerregistrationresult",
    "ping",
    "pong",
    "error",
    "registerfunction",
    "reattach",
    "",
    "INVOKEFUNCTION",
    "invoke_function",
    "no-such-type",
)
FIELDS = (
    "id",
    "function_id",
    "invocation_id",
    "data",
    "result",
    "error",
    "config",
    "trigger_type",
    "action",
    "metadata",
)
INVALID_JSON = ("", " ", "{", "}", '{"type":', "nul", "[1,", "{'type': 'ping'}", "\x00", "NaN]")

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


near_miss = st.builds(
    lambda t, fields: {"type": t, **fields},
    st.sampled_from(NEAR_MISS_TYPES),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
)
unknown_result = st.builds(
    lambda v: {
        "type": "invocationresult",
        "invocation_id": str(uuid.UUID(int=v)),
        "function_id": ECHO,
        "result": {"stale": True},
    },
    st.integers(min_value=0, max_value=2**128 - 1),
)
garbage: st.SearchStrategy[Garbage] = st.one_of(
    st.tuples(st.just("invalid_json"), st.sampled_from(INVALID_JSON) | text),
    st.tuples(st.just("json_value"), json_values.map(dumps)),
    st.tuples(st.just("near_miss"), near_miss.map(dumps)),
    st.tuples(st.just("binary"), st.binary(max_size=120)),
    st.tuples(st.just("binary_json"), near_miss.map(lambda m: dumps(m).encode())),
    st.tuples(st.just("unknown_result"), unknown_result.map(dumps)),
)

# One of each kind, always run first: the gate covers every kind whatever Hypothesis draws.
EVERY_KIND: list[Garbage] = [
    ("invalid_json", "{"),
    ("invalid_json", ""),
    ("json_value", "null"),
    ("json_value", "[1,2,3]"),
    ("near_miss", dumps({"type": "error", "error": {"code": "AUTH_ERROR", "message": "denied"}})),
    ("near_miss", dumps({"type": "no-such-type", "data": {}})),
    ("near_miss", dumps({"type": "invokefunction"})),
    ("near_miss", dumps({"type": "invocationresult"})),
    (
        "near_miss",
        dumps({"type": "invokefunction", "invocation_id": 42, "function_id": [1], "data": 3}),
    ),
    ("near_miss", dumps({"type": "invocationresult", "invocation_id": {"a": 1}, "error": "x"})),
    ("near_miss", dumps({"type": "registertrigger", "id": 7, "trigger_type": None})),
    ("near_miss", dumps({"type": "unregistertrigger", "trigger_type": "mf-nope"})),
    ("binary", b"\xff\xfe\x00garbage\x80"),
    ("binary_json", dumps({"type": "pong"}).encode()),
    (
        "unknown_result",
        dumps(
            {
                "type": "invocationresult",
                "invocation_id": str(uuid.UUID(int=1)),
                "function_id": ECHO,
                "result": 1,
            }
        ),
    ),
    ("deep_nesting", "[" * 20_000 + "]" * 20_000),
]


def describe(g: Garbage) -> dict[str, Any]:
    kind, frame = g
    shown = frame[:80] if isinstance(frame, str) else frame[:40].hex()
    return {"kind": kind, "binary": isinstance(frame, bytes), "bytes": len(frame), "frame": shown}


async def assert_still_serving(
    s: Any, w: Any, conn: Any, probe: Any, after: dict[str, Any]
) -> None:
    """The worker answers an invocation on the same connection it had before the frame."""
    out = await s.engine.invoke(ECHO, probe, timeout=5)
    assert out.ok and out.result == probe, (
        f"after {after} the worker answered {out.result if out.ok else out.error} to an "
        f"invocation of {probe}; it must keep serving (iii-protocol.md §11.14)"
    )
    tr = s.engine.transcript
    conns = tr.connections_of(w.worker_name)
    dropped = [e.detail for e in tr.events if e.kind == DISCONNECT and e.conn == conn.id]
    assert conn.alive and conns == [conn.id] and not dropped, (
        f"after {after} the connection did not survive: disconnect {dropped}, worker "
        f"connections {conns}; it must keep serving on the same connection"
    )


@check(
    "malformed.survival",
    title="Malformed and unexpected frames never stop the worker serving on the same connection",
    contract="iii-protocol.md#11.14 A malformed or unexpected frame does not stop message processing",
)
@examples(gate=2, nightly=30)
@given(frames=st.lists(garbage, min_size=1, max_size=8))
@example(frames=EVERY_KIND)
async def test_garbage_survival(iii_sdk, verdict, frames: list[Garbage]) -> None:
    verdict.set_example([describe(g) for g in frames])
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(functions={ECHO: "echo"})
        conn = await s.connection(w, (ECHO,))
        for i, g in enumerate(frames):
            kind, frame = g
            verdict.evidence(sent=[describe(x) for x in frames[: i + 1]])
            s.engine.send_raw(conn, frame, binary=isinstance(frame, bytes))
            await assert_still_serving(s, w, conn, {"probe": i}, describe(g))


@check(
    "malformed.unknown_function",
    title="An invoke for a function the worker does not have is answered with function_not_found",
    contract="iii-protocol.md#11.17 An inbound invoke for an unknown function is answered with function_not_found",
)
async def test_unknown_function(iii_sdk, verdict) -> None:
    missing = "mf::not-registered-here"
    inv_id = str(uuid.uuid4())
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(functions={ECHO: "echo"})
        conn = await s.connection(w, (ECHO,))
        s.engine.send(
            conn,
            {"type": "invokefunction", "invocation_id": inv_id, "function_id": missing, "data": {}},
        )
        reply = await s.engine.transcript.wait_frame(
            "invocationresult",
            conn=conn.id,
            timeout=3,
            where=lambda m: m.get("invocation_id") == inv_id,
        )
        answer = reply.message or {}
        verdict.evidence(reply=answer)
        error = answer.get("error") or {}
        assert error.get("code") == "function_not_found", (
            f"an invoke of {missing!r}, which the worker never registered, was answered with "
            f"{answer}; the contract is error code function_not_found"
        )
        await assert_still_serving(s, w, conn, {"probe": 1}, {"kind": "unknown_function"})


@check(
    "malformed.oversize",
    title="Megabyte frames from the engine are read and handled on the same connection",
    contract="iii-protocol.md#1.3 Size limits: the engine sends messages up to 64 MiB (tungstenite defaults)",
)
async def test_oversize_frames(iii_sdk, verdict) -> None:
    """2 MiB is over the 1 MiB ``websockets`` default an SDK gets by not setting a limit.

    The big frames never reach a handler: a driver reports handler input on its event stream,
    and the check is about the SDK reading the frame, not about the driver echoing megabytes.
    Frames go out through ``send_raw``, so the transcript keeps a 200-byte preview of each.
    """
    size = 2 * 1024 * 1024
    missing = "mf::not-registered-here"
    inv_id = str(uuid.uuid4())
    big: list[Garbage] = [
        ("2 MiB non-JSON text", "#" * size),
        (
            "2 MiB result for an unknown invocation",
            dumps(
                {
                    "type": "invocationresult",
                    "invocation_id": str(uuid.uuid4()),
                    "function_id": ECHO,
                    "result": {"blob": "r" * size},
                }
            ),
        ),
        (
            "2 MiB invoke of a function the worker lacks",
            dumps(
                {
                    "type": "invokefunction",
                    "invocation_id": inv_id,
                    "function_id": missing,
                    "data": {"blob": "d" * size},
                }
            ),
        ),
    ]
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(functions={ECHO: "echo"})
        conn = await s.connection(w, (ECHO,))
        tr = s.engine.transcript
        verdict.evidence(sent=[{"kind": k, "bytes": len(f)} for k, f in big])
        for i, (kind, frame) in enumerate(big):
            s.engine.send_raw(conn, frame)
            await assert_still_serving(s, w, conn, {"probe": i}, {"kind": kind})
        reply = await tr.wait_frame(
            "invocationresult",
            conn=conn.id,
            timeout=3,
            where=lambda m: m.get("invocation_id") == inv_id,
        )
        verdict.evidence(reply_to_big_invoke=reply.message)
        code = ((reply.message or {}).get("error") or {}).get("code")
        assert code == "function_not_found", (
            f"a 2 MiB invoke of {missing!r} was answered with {reply.message}; expected error "
            "code function_not_found, as for a small one"
        )
