"""Round trips per second through the fake engine next to a raw `websockets` echo server.

Both run in this process on loopback, measured in the same run, so the ratio is what matters:
  - echo:   websockets client -> websockets.serve echo handler -> client
  - ping:   worker sends protocol `ping` -> fake engine decodes, records, answers `pong`
  - invoke: engine.invoke() -> worker echoes the invocation -> engine resolves the result
Usage: python bench/bench_engine.py [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from fake_engine import FakeEngine


async def bench_echo(n: int) -> float:
    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            msg = json.dumps({"type": "ping"})
            t0 = time.perf_counter()
            for _ in range(n):
                await ws.send(msg)
                await ws.recv()
            return n / (time.perf_counter() - t0)


async def bench_ping(n: int) -> float:
    async with FakeEngine() as engine, connect(engine.url, compression=None) as ws:
        await ws.recv()  # workerregistered
        msg = json.dumps({"type": "ping"})
        t0 = time.perf_counter()
        for _ in range(n):
            await ws.send(msg)
            await ws.recv()
        return n / (time.perf_counter() - t0)


async def bench_invoke(n: int) -> float:
    async with FakeEngine(namespace_grace_s=0) as engine, connect(engine.url,
                                                                    compression=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "registerfunction", "id": "b::echo"}))

        async def worker():
            async for raw in ws:
                m = json.loads(raw)
                if m["type"] == "invokefunction":
                    await ws.send(json.dumps({"type": "invocationresult", "function_id": "b::echo",
                                              "invocation_id": m["invocation_id"],
                                              "result": m["data"]}))

        task = asyncio.create_task(worker())
        await engine.wait_until(lambda: "b::echo" in engine.function_ids(), 5, "registration")
        t0 = time.perf_counter()
        for i in range(n):
            await engine.invoke("b::echo", {"i": i})
        rate = n / (time.perf_counter() - t0)
        task.cancel()
        return rate


async def main(n: int) -> None:
    echo = await bench_echo(n)
    ping = await bench_ping(n)
    invoke = await bench_invoke(n)
    print(f"round trips ({n} each, loopback, one process)")
    print(f"  raw websockets echo server : {echo:9.0f} rt/s")
    print(f"  fake engine ping -> pong   : {ping:9.0f} rt/s   ratio {ping / echo:.2f}")
    print(f"  fake engine invoke -> result: {invoke:8.0f} rt/s   ratio {invoke / echo:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    asyncio.run(main(ap.parse_args().n))
