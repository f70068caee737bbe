"""iii conformance driver for the Python iii-sdk (see SPEC.md in this directory).

Reads JSON-line commands on stdin, writes JSON-line events on stdout. Uses only
the public SDK API (``iii.register_worker``, ``InitOptions``, ``TriggerAction``,
``InvocationError``, ``current_invocation``). Anything else that would reach
stdout (SDK prints, warnings) is redirected to stderr at start-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

PROTOCOL = 1

# --- stdout is the event channel, and nothing else may write to it ----------------
_EVENTS_FD = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr
_emit_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    rec = {"event": event, "t_ns": time.monotonic_ns(), **fields}
    data = (json.dumps(rec, separators=(",", ":"), default=repr) + "\n").encode()
    with _emit_lock:
        view = memoryview(data)
        while view:
            n = os.write(_EVENTS_FD, view)
            view = view[n:]


os.environ.setdefault("OTEL_ENABLED", "false")

try:
    import iii  # noqa: E402
    from iii import InitOptions, InvocationError, TriggerAction, register_worker  # noqa: E402
except Exception as e:  # pragma: no cover - reported to the harness
    emit("fatal", message=f"cannot import iii-sdk: {type(e).__name__}: {e}")
    sys.exit(3)

try:
    from importlib.metadata import version as _dist_version

    SDK_VERSION = _dist_version("iii-sdk")
except Exception:  # pragma: no cover
    SDK_VERSION = getattr(iii, "__version__", None)

try:
    from iii import current_invocation as _current_invocation
except ImportError:  # older SDKs
    _current_invocation = None

try:  # base class register_trigger_type validates against (deprecated but public in 0.25)
    from iii.triggers import TriggerHandler as _TriggerHandlerBase
except ImportError:  # pragma: no cover
    _TriggerHandlerBase = object  # type: ignore[assignment,misc]

try:  # the type of InitOptions.reconnection_config
    from iii_helpers.observability import ReconnectionConfig
except ImportError:  # pragma: no cover - older layouts
    ReconnectionConfig = None  # type: ignore[assignment,misc]


class CommandError(Exception):
    pass


class Driver:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=64)
        self.worker: Any = None
        self.worker_ready: asyncio.Future[Any] | None = None
        self.records: dict[str, list[Any]] = {}
        self.triggers: dict[str, Any] = {}
        self.functions: dict[str, Any] = {}
        self.trigger_types: dict[str, dict[str, Any]] = {}
        self.next_handle = 0
        self.shutting_down = False

    # --- helpers -------------------------------------------------------------------
    async def blocking(self, fn: Any, *args: Any) -> Any:
        return await self.loop.run_in_executor(self.pool, fn, *args)

    async def need_worker(self) -> Any:
        if self.worker_ready is None:
            raise CommandError("not connected: send connect first")
        return await self.worker_ready

    def capabilities(self) -> dict[str, bool]:
        return {
            "state": True,
            "state_changed": True,
            "trigger_id": False,  # register_trigger returns a Trigger without its id
            "invocation_id": _current_invocation is not None,
            "register_trigger_type": True,
            "unregister_trigger_type": True,
            "connect_blocks": True,  # register_worker waits up to 30 s for the socket
        }

    # --- commands ------------------------------------------------------------------
    async def cmd_connect(self, c: dict[str, Any]) -> dict[str, Any]:
        if self.worker_ready is not None:
            raise CommandError("already connected")
        otel = c.get("otel", False)
        os.environ["OTEL_ENABLED"] = "true" if otel else "false"
        opts: dict[str, Any] = {"otel": {"enabled": bool(otel)}}
        if c.get("name") is not None:
            opts["worker_name"] = c["name"]
        if c.get("invocation_timeout_ms") is not None:
            opts["invocation_timeout_ms"] = int(c["invocation_timeout_ms"])
        rc = c.get("reconnection")
        if rc:
            if ReconnectionConfig is None:
                raise CommandError("reconnection config not supported by this SDK")
            opts["reconnection_config"] = ReconnectionConfig(**rc)
        options = InitOptions(**opts)
        self.worker_ready = self.loop.create_future()
        ready = self.worker_ready
        t0 = time.monotonic_ns()

        async def run() -> dict[str, Any]:
            try:
                worker = await self.blocking(register_worker, c["url"], options)
            except BaseException as e:
                ready.set_exception(CommandError(f"connect failed: {type(e).__name__}: {e}"))
                ready.exception()  # mark retrieved
                raise
            self.worker = worker
            ready.set_result(worker)
            blocked_ms = (time.monotonic_ns() - t0) / 1e6
            if hasattr(worker, "add_connection_state_listener"):
                worker.add_connection_state_listener(lambda s: emit("state_changed", state=str(s)))
            return {"state": self._state(worker), "blocked_ms": blocked_ms}

        if c.get("wait", True):
            return await run()
        task = asyncio.ensure_future(run())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return {"state": "pending", "blocked_ms": 0.0}

    def _state(self, worker: Any) -> str:
        getter = getattr(worker, "get_connection_state", None)
        return str(getter()) if getter else "unsupported"

    async def cmd_state(self, c: dict[str, Any]) -> dict[str, Any]:
        if self.worker is None:
            return {"state": "pending" if self.worker_ready is not None else "not_connected"}
        return {"state": self._state(self.worker)}

    def _make_handler(self, function_id: str, behaviour: dict[str, Any]):
        kind = behaviour.get("kind")
        if kind not in ("echo", "fail", "sleep", "record"):
            raise CommandError(f"unknown behaviour kind {kind!r}")
        message = behaviour.get("message", "driver-induced failure")
        sleep_ms = float(behaviour.get("ms", 0))

        async def handler(data: Any) -> Any:
            inv_id = None
            if _current_invocation is not None:
                try:
                    ctx = _current_invocation()
                    inv_id = getattr(ctx, "invocation_id", None) if ctx else None
                except Exception:
                    inv_id = None
            emit(
                "invoked",
                function_id=function_id,
                payload=data,
                invocation_id=inv_id,
                behaviour=kind,
            )
            if kind == "record":
                self.records.setdefault(function_id, []).append(data)
            if kind == "sleep":
                await asyncio.sleep(sleep_ms / 1000.0)
            if kind == "fail":
                raise RuntimeError(message)
            return data

        return handler

    async def cmd_register_function(self, c: dict[str, Any]) -> dict[str, Any]:
        worker = await self.need_worker()
        fid = c["function_id"]
        handler = self._make_handler(fid, c.get("behaviour") or {"kind": "echo"})
        kwargs = {}
        if c.get("description") is not None:
            kwargs["description"] = c["description"]
        ref = await self.blocking(lambda: worker.register_function(fid, handler, **kwargs))
        self.functions[fid] = ref
        return {"function_id": fid}

    async def cmd_unregister_function(self, c: dict[str, Any]) -> dict[str, Any]:
        await self.need_worker()
        ref = self.functions.pop(c["function_id"], None)
        if ref is None:
            raise CommandError(f"function {c['function_id']!r} was not registered by this driver")
        await self.blocking(ref.unregister)
        return {}

    async def cmd_register_trigger_type(self, c: dict[str, Any]) -> dict[str, Any]:
        worker = await self.need_worker()
        type_id = c["trigger_type"]

        class Handler(_TriggerHandlerBase):  # type: ignore[misc,valid-type]
            async def register_trigger(self, config: Any) -> None:
                emit(
                    "trigger_type_call", op="register", trigger_type=type_id, trigger=_dump(config)
                )

            async def unregister_trigger(self, config: Any) -> None:
                emit(
                    "trigger_type_call",
                    op="unregister",
                    trigger_type=type_id,
                    trigger=_dump(config),
                )

        spec = {"id": type_id, "description": c.get("description") or type_id}
        await self.blocking(worker.register_trigger_type, spec, Handler())
        self.trigger_types[type_id] = spec
        return {}

    async def cmd_unregister_trigger_type(self, c: dict[str, Any]) -> dict[str, Any]:
        worker = await self.need_worker()
        spec = self.trigger_types.pop(c["trigger_type"], None) or {
            "id": c["trigger_type"],
            "description": c["trigger_type"],
        }
        await self.blocking(worker.unregister_trigger_type, spec)
        return {}

    async def cmd_register_trigger(self, c: dict[str, Any]) -> dict[str, Any]:
        worker = await self.need_worker()
        req = {
            "type": c["trigger_type"],
            "function_id": c["function_id"],
            "config": c.get("config", {}),
        }
        trig = await self.blocking(worker.register_trigger, req)
        self.next_handle += 1
        handle = f"t{self.next_handle}"
        self.triggers[handle] = trig
        tid = getattr(trig, "id", None)
        return {"handle": handle, "trigger_id": tid if isinstance(tid, str) else None}

    async def cmd_unregister_trigger(self, c: dict[str, Any]) -> dict[str, Any]:
        await self.need_worker()
        trig = self.triggers.pop(c["handle"], None)
        if trig is None:
            raise CommandError(f"unknown trigger handle {c['handle']!r}")
        await self.blocking(trig.unregister)
        return {}

    async def cmd_trigger(self, c: dict[str, Any]) -> dict[str, Any]:
        worker = await self.need_worker()
        req: dict[str, Any] = {"function_id": c["function_id"], "payload": c.get("payload")}
        if c.get("timeout_ms") is not None:
            req["timeout_ms"] = c["timeout_ms"]
        if c.get("action") == "void":
            req["action"] = TriggerAction.Void()
        t0 = time.monotonic_ns()
        try:
            value = await self.blocking(worker.trigger, req)
        except InvocationError as e:
            t1 = time.monotonic_ns()
            return {
                "outcome": "error",
                "error": {
                    "code": getattr(e, "code", None),
                    "message": getattr(e, "message", str(e)),
                    "class": type(e).__name__,
                },
                "elapsed_ms": (t1 - t0) / 1e6,
                "t_start_ns": t0,
                "t_end_ns": t1,
            }
        except Exception as e:
            t1 = time.monotonic_ns()
            return {
                "outcome": "error",
                "error": {
                    "code": getattr(e, "code", None),
                    "message": str(e),
                    "class": type(e).__name__,
                },
                "elapsed_ms": (t1 - t0) / 1e6,
                "t_start_ns": t0,
                "t_end_ns": t1,
            }
        t1 = time.monotonic_ns()
        return {
            "outcome": "ok",
            "result": value,
            "elapsed_ms": (t1 - t0) / 1e6,
            "t_start_ns": t0,
            "t_end_ns": t1,
        }

    async def cmd_records(self, c: dict[str, Any]) -> dict[str, Any]:
        fid = c.get("function_id")
        if fid is not None:
            return {"records": {fid: list(self.records.get(fid, []))}}
        return {"records": {k: list(v) for k, v in self.records.items()}}

    async def cmd_shutdown(self, c: dict[str, Any]) -> dict[str, Any]:
        self.shutting_down = True
        if self.worker is not None:
            await asyncio.wait_for(self.blocking(self.worker.shutdown), timeout=10)
        return {}

    # --- dispatch ------------------------------------------------------------------
    async def handle(self, line: str) -> None:
        try:
            c = json.loads(line)
            if not isinstance(c, dict):
                raise ValueError("command is not a JSON object")
        except ValueError as e:
            emit("reply", id=None, ok=False, error={"message": f"bad command line: {e}"})
            return
        cid = c.get("id")
        name = c.get("cmd")
        fn = getattr(self, f"cmd_{name}", None) if isinstance(name, str) else None
        if fn is None:
            emit("reply", id=cid, ok=False, error={"message": f"unknown command {name!r}"})
            return
        try:
            result = await fn(c)
        except CommandError as e:
            emit("reply", id=cid, ok=False, error={"message": str(e), "type": "CommandError"})
        except KeyError as e:
            emit("reply", id=cid, ok=False, error={"message": f"missing field {e}"})
        except Exception as e:
            emit(
                "reply",
                id=cid,
                ok=False,
                error={
                    "message": f"{type(e).__name__}: {e}",
                    "type": type(e).__name__,
                    "traceback": traceback.format_exc(),
                },
            )
        else:
            emit("reply", id=cid, ok=True, result=result)
        if name == "shutdown":
            _exit(0)


def _dump(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if isinstance(obj, dict):
        return obj
    return repr(obj)


def _exit(code: int) -> None:
    # os._exit skips atexit; run those hooks (e.g. removal of the SDK's ~/.iii/run marker)
    # on a daemon thread so a hanging hook cannot keep the driver alive.
    import atexit

    t = threading.Thread(target=atexit._run_exitfuncs, daemon=True)
    t.start()
    t.join(2.0)
    sys.stderr.flush()
    os._exit(code)


async def main() -> None:
    loop = asyncio.get_running_loop()
    driver = Driver(loop)
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        for raw in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, raw)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=reader, daemon=True, name="stdin-reader").start()
    emit(
        "ready",
        protocol=PROTOCOL,
        pid=os.getpid(),
        driver="python_driver",
        sdk={"language": "python", "package": "iii-sdk", "version": SDK_VERSION},
        runtime={"name": "cpython", "version": sys.version.split()[0]},
        capabilities=driver.capabilities(),
    )
    tasks: set[asyncio.Task[None]] = set()
    while True:
        raw = await lines.get()
        if raw is None:  # stdin closed: the harness is gone; shut down quickly
            if driver.worker is not None:
                try:
                    await asyncio.wait_for(driver.blocking(driver.worker.shutdown), timeout=5)
                except Exception:
                    pass
            _exit(0)
        if not raw.strip():
            continue
        t = asyncio.ensure_future(driver.handle(raw))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        _exit(130)
    except BaseException as e:  # pragma: no cover
        emit("fatal", message=f"{type(e).__name__}: {e}")
        _exit(3)
