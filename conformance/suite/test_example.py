"""Smoke check used while the families are written."""

from conformance.scenario import FAST, scenario
from conformance.verdict import check


@check(
    "replay.smoke",
    title="worker registers and is invocable",
    contract="seed-external-workers.md#lifecycle",
)
async def test_smoke(iii_sdk, verdict):
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(reconnection=FAST, functions={"s::echo": "echo"})
        out = await s.engine.invoke("s::echo", {"a": 1})
        verdict.evidence(result=out.result)
        assert out.result == {"a": 1}
