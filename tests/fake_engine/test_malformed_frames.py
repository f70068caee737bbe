"""Generated garbage never crashes the engine: a normal worker still works afterwards."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from fake_engine import FakeEngine
from fake_engine.protocol import MESSAGE_TYPES

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
# Frames that look like protocol messages but have wrong or missing fields.
near_miss = st.builds(
    lambda t, fields: json.dumps({"type": t, **fields}),
    st.sampled_from(sorted(MESSAGE_TYPES) + ["error", "", "INVOKEFUNCTION"]),
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "function_id",
                "data",
                "invocation_id",
                "config",
                "trigger_type",
                "previous_worker_id",
                "action",
                "result",
            ]
        ),
        json_values,
        max_size=5,
    ),
)
garbage = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    near_miss,
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.generate],
)
@given(frames=st.lists(garbage, min_size=1, max_size=12))
def test_garbage_then_normal_worker(frames):
    async def run() -> None:
        async with FakeEngine(namespace_grace_s=0.05) as engine:
            async with connect(engine.url, ping_interval=None) as bad:
                for f in frames:
                    await bad.send(f)
                await bad.send(json.dumps({"type": "ping"}))
                # The garbage connection is still served in order.
                while json.loads(await asyncio.wait_for(bad.recv(), 5))["type"] != "pong":
                    pass
            async with connect(engine.url, ping_interval=None) as good:
                await good.send(json.dumps({"type": "registerfunction", "id": "ok::fn"}))
                await good.send(
                    json.dumps(
                        {
                            "type": "invokefunction",
                            "function_id": "engine::workers::register",
                            "data": {"name": "good", "pid": 1},
                            "action": {"type": "void"},
                        }
                    )
                )
                await engine.wait_worker("good", timeout=5, functions=("ok::fn",))
                call = asyncio.create_task(engine.invoke("ok::fn", {"v": 1}, timeout=5))
                while True:
                    msg = json.loads(await asyncio.wait_for(good.recv(), 5))
                    if msg["type"] == "invokefunction" and msg["function_id"] == "ok::fn":
                        break
                await good.send(
                    json.dumps(
                        {
                            "type": "invocationresult",
                            "function_id": "ok::fn",
                            "invocation_id": msg["invocation_id"],
                            "result": 7,
                        }
                    )
                )
                assert (await call).result == 7

    asyncio.run(asyncio.wait_for(run(), 10))
