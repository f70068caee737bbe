"""Driver (conformance/drivers/SPEC.md, protocol 1) for the seeded-fault mini SDK.

    python mini_driver.py --bug no_jitter

Runs with ``--iii-driver "<python> mini_driver.py --bug NAME"``. stdout carries events only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

# stdout is the event channel: keep everything else (logging, stray prints) on stderr.
_EVENTS_FD = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mini_sdk import BUGS, VERSION, MiniWorker, ReconnectionConfig  # noqa: E402

_emit_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    rec = {"event": event, "t_ns": time.monotonic_ns(), **fields}
    data = (json.dumps(rec, separators=(",", ":"), default=repr) + "\n").encode()
    with _emit_lock:
        view = memoryview(data)
        while view:
            view = view[os.write(_EVENTS_FD, view) :]


class CommandError(Exception):
    pass


class Driver:
    def __init__(self, bug: str) -> None:
        self.bug = bug
        self.worker: MiniWorker | None = None
        self.records: dict[str, list[Any]] = {}
        self.triggers: dict[str, str] = {}  # handle -> trigger id

    def need_worker(self) -> MiniWorker:
        if self.worker is None:
            raise CommandError("not connected: send connect first")
        return self.worker

    async def cmd_connect(self, c: dict[str, Any]) -> dict[str, Any]:
        if self.worker is not None:
            raise CommandError("already connected")
        t0 = time.monotonic_ns()
        self.worker = MiniWorker(
            c["url"],
            name=c.get("name") or f"mini-{os.getpid()}",
            reconnection=ReconnectionConfig.from_dict(c.get("reconnection")),
            invocation_timeout_ms=c.get("invocation_timeout_ms") or 30000,
            bug=self.bug,
            on_state=lambda s: emit("state_changed", state=s),
        )
        self.worker.start()  # does not block, like Node's registerWorker
        return {"state": self.worker.state, "blocked_ms": (time.monotonic_ns() - t0) / 1e6}

    async def cmd_state(self, c: dict[str, Any]) -> dict[str, Any]:
        return {"state": self.worker.state if self.worker else "not_connected"}

    def _handler(self, fid: str, behaviour: dict[str, Any]) -> Any:
        kind = behaviour.get("kind")
        if kind not in ("echo", "fail", "sleep", "record"):
            raise CommandError(f"unknown behaviour kind {kind!r}")

        async def handler(data: Any, invocation_id: str | None) -> Any:
            emit(
                "invoked",
                function_id=fid,
                payload=data,
                invocation_id=invocation_id,
                behaviour=kind,
            )
            if kind == "record":
                self.records.setdefault(fid, []).append(data)
            elif kind == "sleep":
                await asyncio.sleep(float(behaviour.get("ms", 0)) / 1000)
            elif kind == "fail":
                raise RuntimeError(behaviour.get("message", "driver-induced failure"))
            return data

        return handler

    async def cmd_register_function(self, c: dict[str, Any]) -> dict[str, Any]:
        fid = c["function_id"]
        handler = self._handler(fid, c.get("behaviour") or {"kind": "echo"})
        await self.need_worker().register_function(fid, handler)
        return {"function_id": fid}

    async def cmd_unregister_function(self, c: dict[str, Any]) -> dict[str, Any]:
        try:
            await self.need_worker().unregister_function(c["function_id"])
        except KeyError:
            raise CommandError(f"function {c['function_id']!r} is not registered") from None
        return {}

    async def cmd_register_trigger_type(self, c: dict[str, Any]) -> dict[str, Any]:
        type_id = c["trigger_type"]

        async def on_call(op: str, msg: dict[str, Any]) -> None:
            trigger = {k: msg.get(k) for k in ("id", "function_id", "config")}
            emit("trigger_type_call", op=op, trigger_type=type_id, trigger=trigger)

        await self.need_worker().register_trigger_type(
            type_id, c.get("description") or type_id, on_call
        )
        return {}

    async def cmd_unregister_trigger_type(self, c: dict[str, Any]) -> dict[str, Any]:
        await self.need_worker().unregister_trigger_type(c["trigger_type"])
        return {}

    async def cmd_register_trigger(self, c: dict[str, Any]) -> dict[str, Any]:
        worker = self.need_worker()
        tid = await worker.register_trigger(
            c["trigger_type"], c["function_id"], c.get("config", {})
        )
        handle = f"t{len(self.triggers) + 1}"
        self.triggers[handle] = tid
        return {"handle": handle, "trigger_id": tid}

    async def cmd_unregister_trigger(self, c: dict[str, Any]) -> dict[str, Any]:
        tid = self.triggers.pop(c["handle"], None)
        if tid is None:
            raise CommandError(f"unknown trigger handle {c['handle']!r}")
        await self.need_worker().unregister_trigger(tid)
        return {}

    async def cmd_trigger(self, c: dict[str, Any]) -> dict[str, Any]:
        worker = self.need_worker()
        t0 = time.monotonic_ns()
        try:
            value = await worker.trigger(
                c["function_id"],
                c.get("payload"),
                timeout_ms=c.get("timeout_ms"),
                void=c.get("action") == "void",
            )
            out: dict[str, Any] = {"outcome": "ok", "result": value}
        except Exception as e:
            err = {"code": getattr(e, "code", None), "message": getattr(e, "message", str(e))}
            out = {"outcome": "error", "error": {**err, "class": type(e).__name__}}
        t1 = time.monotonic_ns()
        return {**out, "elapsed_ms": (t1 - t0) / 1e6, "t_start_ns": t0, "t_end_ns": t1}

    async def cmd_records(self, c: dict[str, Any]) -> dict[str, Any]:
        fid = c.get("function_id")
        if fid is not None:
            return {"records": {fid: list(self.records.get(fid, []))}}
        return {"records": {k: list(v) for k, v in self.records.items()}}

    async def cmd_shutdown(self, c: dict[str, Any]) -> dict[str, Any]:
        if self.worker is not None:
            await asyncio.wait_for(self.worker.shutdown(), 10)
        return {}

    async def handle(self, line: str) -> None:
        try:
            c = json.loads(line)
            if not isinstance(c, dict):
                raise ValueError("command is not a JSON object")
        except ValueError as e:
            emit("reply", id=None, ok=False, error={"message": f"bad command line: {e}"})
            return
        cid, name = c.get("id"), c.get("cmd")
        fn = getattr(self, f"cmd_{name}", None) if isinstance(name, str) else None
        if fn is None:
            emit("reply", id=cid, ok=False, error={"message": f"unknown command {name!r}"})
            return
        try:
            result = await fn(c)
        except CommandError as e:
            emit("reply", id=cid, ok=False, error={"message": str(e), "type": "CommandError"})
        except Exception as e:
            error = {"message": f"{type(e).__name__}: {e}", "type": type(e).__name__}
            emit("reply", id=cid, ok=False, error={**error, "traceback": traceback.format_exc()})
        else:
            emit("reply", id=cid, ok=True, result=result)
        if name == "shutdown":
            os._exit(0)


async def main(bug: str) -> None:
    loop = asyncio.get_running_loop()
    driver = Driver(bug)
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        for raw in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, raw)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=reader, daemon=True, name="stdin-reader").start()
    emit(
        "ready",
        protocol=1,
        pid=os.getpid(),
        driver="mini_driver",
        sdk={"language": "python", "package": "mini-sdk", "version": f"{VERSION}+{bug}"},
        runtime={"name": "cpython", "version": sys.version.split()[0]},
        capabilities={
            "state": True,
            "state_changed": True,
            "trigger_id": True,
            "invocation_id": True,
            "connect_blocks": False,
            "register_trigger_type": True,
            "unregister_trigger_type": True,
        },
    )
    tasks: set[asyncio.Task[None]] = set()
    while (raw := await lines.get()) is not None:
        if raw.strip():
            t = asyncio.ensure_future(driver.handle(raw))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    if driver.worker is not None:  # stdin closed: the harness is gone
        try:
            await asyncio.wait_for(driver.worker.shutdown(), 5)
        except Exception:
            pass
    os._exit(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bug", default="none", choices=sorted(BUGS))
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("MINI_SDK_LOG", "WARNING"))
    try:
        asyncio.run(main(args.bug))
    except KeyboardInterrupt:
        os._exit(130)
    except BaseException as e:
        emit("fatal", message=f"{type(e).__name__}: {e}")
        os._exit(3)
