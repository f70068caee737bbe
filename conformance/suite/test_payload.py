"""payload.*: JSON payloads and results cross the worker unchanged, in both directions.

A payload is a JSON value (iii-protocol.md §1.3, §2 ``invokefunction.data``, ``invocationresult.result``).
JSON has one number type, so numbers compare as IEEE doubles (``1 == 1.0``, ``-0.0 == 0``,
``6.972645617524866e16 == 69726456175248660``) but never equal a boolean; everything else compares
exactly. Generated values stay interoperable (RFC 8259 §6, §8.2):
integers within ±(2**53 - 1), finite floats, no lone surrogates.

The engine adds ``_caller_worker_id`` to object payloads it routes from one worker to another
(iii-protocol.md §5.1); never for in-process callers (``engine.invoke``) or engine-answered calls.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from conformance.profiles import examples
from conformance.scenario import scenario
from conformance.verdict import check
from fake_engine.transcript import FRAME, IN

CALLER_KEY = "_caller_worker_id"
ECHO = "pl::echo"
BACK = "pl::back"  # engine-answered: returns the data it received
SAFE_INT = 2**53 - 1
# Keys with a meaning elsewhere: added by the engine, a channel reference's shape (resolved into
# reader/writer objects by the SDKs), or runtime object internals (payload.reserved_keys).
RUNTIME_KEYS = (
    "__proto__",
    "constructor",
    "prototype",
    "toString",
    "valueOf",
    "hasOwnProperty",
    "toJSON",
    "__class__",
    "__dict__",
)
EXCLUDED_KEYS = frozenset({CALLER_KEY, "channel_id", "access_key", "direction", "__proto__"})
SPECIAL_KEYS = (
    "",
    " ",
    "a.b",
    "a/b",
    "$ref",
    "k\x00",
    "\n",
    '"',
    "\\",
    "é",
    "😀",
    "0",
    "-1",
    "type",
)
ASTRAL = ("😀", "𝄞", "\U0010ffff", "\U0001f9ea\u200d", "𠜎")

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=16) | st.sampled_from(ASTRAL)
keys = (texts | st.sampled_from(SPECIAL_KEYS)).filter(lambda k: k not in EXCLUDED_KEYS)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE_INT, max_value=SAFE_INT)
    | st.sampled_from((0, SAFE_INT, -SAFE_INT))
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=24,
)
# Top-level null is payload.null's subject (the frame loses `data` in some SDKs).
payloads = st.lists(json_values.filter(lambda v: v is not None), min_size=1, max_size=6)

EDGE_CASES = [
    {"": [], " ": {}, "a.b": "", "k\x00": '\x00\n\t"\\', "😀": "𝄞\U0010ffff", "é": "ü"},
    [5e-324, -0.0, 1.7976931348623157e308, SAFE_INT, -SAFE_INT, 0.1, 1e21, 1.5, -2],
    {"nested": [[[{"deep": [None, True, False, {"x": None}]}]]], "empty": [{}, [], ""]},
    "😀𝄞",
    0,
    False,
    [],
    {},
]


def json_diff(sent: Any, got: Any, path: str = "$") -> str | None:
    """The first place where ``got`` differs from ``sent`` as JSON, or None."""
    if isinstance(sent, bool) or isinstance(got, bool):
        same = type(sent) is type(got) and sent == got
    elif isinstance(sent, float) or isinstance(got, float):
        # One IEEE double, two spellings: Node writes 6.972645617524866e16 as 69726456175248660,
        # which Python reads back as an int.
        same = isinstance(sent, int | float) and isinstance(got, int | float)
        same = same and float(sent) == float(got)
    elif isinstance(sent, int) and isinstance(got, int):
        same = sent == got
    elif isinstance(sent, list) and isinstance(got, list):
        if len(sent) != len(got):
            return f"{path}: {len(sent)} items sent, {len(got)} received"
        for i, (a, b) in enumerate(zip(sent, got, strict=True)):
            d = json_diff(a, b, f"{path}[{i}]")
            if d:
                return d
        return None
    elif isinstance(sent, dict) and isinstance(got, dict):
        if sent.keys() != got.keys():
            missing = sorted(set(sent) - set(got))
            extra = sorted(set(got) - set(sent))
            return f"{path}: keys missing {missing!r}, unexpected {extra!r}"
        for k in sent:
            d = json_diff(sent[k], got[k], f"{path}[{k!r}]")
            if d:
                return d
        return None
    else:
        same = type(sent) is type(got) and sent == got
    return None if same else f"{path}: sent {sent!r}, received {got!r}"


def without_caller(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != CALLER_KEY}
    return value


async def engine_roundtrip(s: Any, w: Any, data: Any) -> dict[str, Any] | None:
    """engine -> worker echo -> engine: None if unchanged, else where it changed first."""
    since = w.mark()
    out = await s.engine.invoke(ECHO, data, timeout=5)
    if not out.ok:
        return {"leg": "engine->worker->engine", "sent": data, "error": out.error}
    ev = await w.wait_event("invoked", 5, what="the echo handler to run", since=since)
    got = ev.get("payload")
    diff = json_diff(data, got)
    if diff:
        return {"leg": "engine->worker handler input", "sent": data, "received": got, "diff": diff}
    diff = json_diff(data, out.result)
    if diff:
        return {"leg": "worker->engine result", "sent": data, "received": out.result, "diff": diff}
    return None


async def worker_roundtrip(s: Any, w: Any, icpt: Any, data: Any) -> dict[str, Any] | None:
    """worker trigger() -> engine (answers with the data) -> worker, then worker -> worker."""
    out = await w.trigger(BACK, data, timeout_ms=5000)
    if not out.ok:
        return {"leg": "trigger to engine", "sent": data, "error": [out.code, out.message]}
    wire = icpt.calls[-1]["data"] if icpt.calls else None
    diff = json_diff(data, wire)
    if diff:
        return {"leg": "worker->engine frame", "sent": data, "received": wire, "diff": diff}
    diff = json_diff(data, out.result)
    if diff:
        return {"leg": "engine->worker result", "sent": data, "received": out.result, "diff": diff}
    out = await w.trigger(ECHO, data, timeout_ms=5000)
    if not out.ok:
        return {"leg": "worker->worker", "sent": data, "error": [out.code, out.message]}
    diff = json_diff(data, without_caller(out.result))
    if diff:
        return {"leg": "worker->worker echo", "sent": data, "received": out.result, "diff": diff}
    return None


def fail_message(bad: dict[str, Any]) -> str:
    if "error" in bad:
        return f"{bad['leg']}: payload {bad['sent']!r} failed with {bad['error']}"
    return (
        f"{bad['leg']}: payload changed in transit ({bad['diff']}); sent {bad['sent']!r}, "
        f"received {bad['received']!r}"
    )


@check(
    "payload.engine_roundtrip",
    title="Payloads invoked by the engine reach the handler and come back unchanged",
    contract="iii-protocol.md#5.2 Engine -> worker: invokefunction.data is the handler input; invocationresult.result its return",
)
@examples(gate=2, nightly=25)
@given(values=payloads)
@example(values=EDGE_CASES)
async def test_engine_roundtrip(iii_sdk, verdict, values: list[Any]) -> None:
    verdict.set_example(values)
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(functions={ECHO: "echo"})
        for data in values:
            bad = await engine_roundtrip(s, w, data)
            verdict.evidence(payloads=len(values), mismatch=bad)
            assert bad is None, fail_message(bad)


@check(
    "payload.worker_roundtrip",
    title="Payloads of trigger() reach the engine and results come back unchanged",
    contract="iii-protocol.md#5.1 Worker -> engine: invokefunction{data}; the result of invocationresult is returned",
)
@examples(gate=2, nightly=25)
@given(values=payloads)
@example(values=EDGE_CASES)
async def test_worker_roundtrip(iii_sdk, verdict, values: list[Any]) -> None:
    verdict.set_example(values)
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(functions={ECHO: "echo"})
        icpt = s.engine.intercept(BACK, handler=lambda data, conn: data)
        for data in values:
            bad = await worker_roundtrip(s, w, icpt, data)
            verdict.evidence(payloads=len(values), mismatch=bad)
            assert bad is None, fail_message(bad)


@check(
    "payload.reserved_keys",
    title="Object keys that name runtime internals (__proto__, constructor, ...) survive",
    contract="iii-protocol.md#5.2 Engine -> worker: invokefunction.data is the handler input",
)
async def test_reserved_keys(iii_sdk, verdict) -> None:
    """Valid JSON object keys, but a runtime that copies objects naively loses or misreads them."""
    data = {k: {"key": k} for k in RUNTIME_KEYS}
    data["nested"] = {"__proto__": {"polluted": True}, "constructor": {"prototype": 1}}
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(functions={ECHO: "echo"})
        icpt = s.engine.intercept(BACK, handler=lambda d, conn: d)
        bad = await engine_roundtrip(s, w, data)
        bad = bad or await worker_roundtrip(s, w, icpt, data)
        verdict.evidence(sent=data, mismatch=bad)
        assert bad is None, fail_message(bad)


@check(
    "payload.null",
    title="A null payload is sent as data: null and delivered as null, both ways",
    contract="iii-protocol.md#5.6 invokefunction.data is a required JSON value: a frame without it is undecodable",
)
async def test_null_payload(iii_sdk, verdict) -> None:
    """Engine 0.23 declares ``InvokeFunction.data: serde_json::Value`` without a serde default
    (engine/src/protocol.rs): a frame with ``"data": null`` decodes, a frame without ``data``
    is dropped as a decode error, so such a call can only end in TIMEOUT."""
    timeout_ms = 500
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(functions={ECHO: "echo"})
        conn = await s.connection(w, (ECHO,))
        tr = s.engine.transcript

        # engine -> worker: engine.invoke cannot send null (it substitutes {}), so write the frame.
        inv_id = str(uuid.uuid4())
        s.engine.send(
            conn,
            {"type": "invokefunction", "invocation_id": inv_id, "function_id": ECHO, "data": None},
        )
        reply = await tr.wait_frame(
            "invocationresult",
            conn=conn.id,
            timeout=3,
            where=lambda m: m.get("invocation_id") == inv_id,
        )
        answer = reply.message
        verdict.evidence(engine_to_worker_reply=answer)

        # worker -> engine
        s.engine.intercept(BACK, handler=lambda d, c: {"received": d})
        mark = len(tr.events)
        out = await w.trigger(BACK, None, timeout_ms=timeout_ms)
        frames = [
            {"raw": e.raw, "decode_error": e.error}
            for e in tr.events[mark:]
            if e.kind == FRAME and e.direction == IN and f'"{BACK}"' in (e.raw or "")
        ]
        verdict.evidence(
            trigger_frames=frames,
            outcome={
                "ok": out.ok,
                "result": out.result,
                "code": out.code,
                "elapsed_ms": out.elapsed_ms,
            },
        )

        assert "error" not in answer and "result" in answer and answer["result"] is None, (
            f"invoked with data: null, the echo handler answered {answer}; expected result null"
        )
        assert len(frames) == 1, f"trigger(payload=None) produced {len(frames)} frames: {frames}"
        frame = frames[0]
        assert frame["decode_error"] is None, (
            f"trigger(payload=None) sent {frame['raw']} - an invokefunction without `data`. The "
            f"engine declares `data` as a required JSON value (engine/src/protocol.rs, no serde "
            f"default), so a real engine drops this frame as undecodable ({frame['decode_error']}) "
            f"and the call can never succeed: it ended with {out.code} after "
            f'{out.elapsed_ms:.0f} ms. A null payload must be sent as "data": null'
        )
        assert out.ok and out.result == {"received": None}, (
            f"trigger(payload=None) sent {frame['raw']} and returned "
            f"{out.code or out.result!r}; expected the engine's answer {{'received': None}}"
        )
