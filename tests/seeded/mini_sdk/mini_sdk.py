"""A compact synthetic iii worker SDK with selectable seeded faults.

It is a test double: it keeps the worker side of the protocol the way iii-protocol.md describes
the published SDKs (Python 0.25 flavour), so that the conformance checks can be shown to pass it
with ``bug="none"`` and to fail it for each seeded fault. Every fault is switched on where it
acts (one line, two for ``payload_mangling``: both directions), marked ``# BUG:``; :data:`BUGS`
lists them.

Protocol points implemented (iii-protocol.md):
- §3.2 on every connection: ``reattach`` (when an identity is known) first, then trigger types,
  functions, triggers, the offline queue, and the void ``engine::workers::register`` call last.
- §5 inbound ``invokefunction``: handler result / ``invocation_failed`` / ``function_not_found``;
  outbound calls with a per-call timeout (0 or None = default) raising ``TIMEOUT``.
- §7.1 backoff ``c = min(initial * mult^n, max)``, ``delay = c + c*J*(2U-1)`` clamped at 0;
  ``max_retries`` N allows N retries per outage; the attempt counter resets once a connection's
  replay has been sent. Any close (normal or abnormal) and any failed handshake is retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import platform
import random
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

log = logging.getLogger("mini_sdk")

VERSION = "0.0.1"
MAX_QUEUE = 1000  # like Python's MAX_QUEUE_SIZE (oldest dropped)
METADATA_FN = "engine::workers::register"

BUGS: dict[str, str] = {
    "none": "correct behaviour",
    "no_jitter": "delay = c (jitter factor ignored)",
    "one_sided_jitter": "delay = c * (1 + J*U[0,1)) instead of symmetric",
    "narrow_jitter": "jitter factor J/3",
    "wide_jitter": "jitter factor 3J (delays clamped at 0, as the formula does)",
    "no_backoff_growth": "every retry waits the initial delay",
    "no_cap": "max_delay_ms is ignored",
    "no_replay": "registrations are not re-sent after a reconnect",
    "duplicate_replay": "each function is registered twice in every replay",
    "no_reattach": "never sends reattach",
    "stale_reattach": "reattaches with the first identity instead of the latest",
    "timeout_never_fires": "trigger() waits for a result forever",
    "timeout_early": "trigger() times out at half the timeout",
    "max_retries_off_by_one": "max_retries N allows N+1 retries",
    "no_counter_reset": "the attempt counter is never reset after a successful connection",
    "replays_unregistered": "unregistered functions stay in the replay set",
    "drops_malformed": "the receive loop stops for good on a non-JSON frame",
    "no_not_found_reply": "an invoke of an unknown function gets no reply",
    "payload_mangling": "floats become strings and null object members are dropped",
}


class InvocationError(Exception):
    """What ``trigger()`` raises: an error result, a TIMEOUT, or SHUTDOWN."""

    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class ReconnectionConfig:
    initial_delay_ms: float = 1000
    max_delay_ms: float = 30000
    backoff_multiplier: float = 2.0
    jitter_factor: float = 0.3
    max_retries: int = -1

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ReconnectionConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known and v is not None})


def backoff_delay_ms(cfg: ReconnectionConfig, attempt: int, bug: str, u: float) -> float:
    """Delay before retry ``attempt`` (0-based within an outage), ``u`` ~ U[0,1)."""
    j = cfg.jitter_factor
    c = min(cfg.initial_delay_ms * cfg.backoff_multiplier**attempt, cfg.max_delay_ms)
    if bug == "no_backoff_growth":  # BUG: no growth
        c = min(cfg.initial_delay_ms, cfg.max_delay_ms)
    if bug == "no_cap":  # BUG: no cap
        c = cfg.initial_delay_ms * cfg.backoff_multiplier**attempt
    if bug == "no_jitter":  # BUG: jitter ignored
        return c
    if bug == "one_sided_jitter":  # BUG: additive-only jitter
        return c * (1 + j * u)
    if bug == "narrow_jitter":  # BUG: a third of the jitter
        j = j / 3
    if bug == "wide_jitter":  # BUG: three times the jitter (the clamp below keeps it >= 0)
        j = 3 * j
    return max(0.0, c + c * j * (2 * u - 1))


def mangle(value: Any) -> Any:
    """``payload_mangling``: floats to strings, ``null`` object members dropped."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: mangle(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [mangle(v) for v in value]
    return value


def _frame(type_: str, **kw: Any) -> dict[str, Any]:
    """A protocol frame; top-level ``None`` fields are omitted, as Python's SDK does."""
    return {"type": type_, **{k: v for k, v in kw.items() if v is not None}}


Handler = Callable[[Any, str | None], Awaitable[Any]]
TriggerTypeHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


class MiniWorker:
    """One worker: a reconnect loop, in-memory registries replayed on every connection."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        reconnection: ReconnectionConfig | None = None,
        invocation_timeout_ms: float = 30000,
        bug: str = "none",
        on_state: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if bug not in BUGS:
            raise ValueError(f"unknown bug {bug!r}; one of {', '.join(BUGS)}")
        self.url = url
        self.name = name
        self.cfg = reconnection or ReconnectionConfig()
        self.invocation_timeout_ms = invocation_timeout_ms
        self.bug = bug
        self.on_state = on_state
        self.rng = rng or random.Random()
        self.state = "disconnected"
        self.functions: dict[str, Handler] = {}
        self.trigger_types: dict[str, tuple[str, TriggerTypeHandler]] = {}
        self.triggers: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_QUEUE)
        self.identity: tuple[str, str | None] | None = None  # last workerregistered processed
        self.first_identity: tuple[str, str | None] | None = None
        self.connections = 0
        self.attempt = 0
        self.fatal: InvocationError | None = None
        self._ws: ClientConnection | None = None
        self._open = False  # registrations go out directly (else they wait for the replay)
        self._lock = asyncio.Lock()  # serialises replay and direct registrations
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._set_state("connecting")
        self._loop_task = asyncio.create_task(self._run())

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    def _retries_exhausted(self) -> bool:
        if self.cfg.max_retries < 0:
            return False
        if self.bug == "max_retries_off_by_one":  # BUG: one retry too many
            return self.attempt > self.cfg.max_retries
        return self.attempt >= self.cfg.max_retries

    async def _run(self) -> None:
        self._set_state("connecting")
        while not self._closing and self.fatal is None:
            try:
                ws = await connect(self.url, open_timeout=10, max_size=64 * 2**20)
            except Exception as e:  # every handshake failure is retried (§11.12)
                log.debug("dial failed: %r", e)
            else:
                await self._serve(ws)
                if self._closing or self.fatal is not None:
                    return
                self._set_state("disconnected")
            if self._retries_exhausted():
                self._set_state("failed")
                return
            delay = backoff_delay_ms(self.cfg, self.attempt, self.bug, self.rng.random())
            self.attempt += 1
            self._set_state("reconnecting")
            log.debug("reconnecting in %.1fms (attempt %d)", delay, self.attempt)
            await asyncio.sleep(delay / 1000)

    async def _serve(self, ws: ClientConnection) -> None:
        try:
            await self._on_connected(ws)
            if self.bug != "no_counter_reset":  # BUG: counter never reset
                self.attempt = 0
            await self._receive(ws)
        except Exception as e:
            log.debug("connection lost: %r", e)
        finally:
            self._open = False
            self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()

    async def _on_connected(self, ws: ClientConnection) -> None:
        """§3.2: reattach, trigger types, functions, triggers, offline queue, metadata."""
        async with self._lock:
            self._ws = ws
            self._open = True
            self._set_state("connected")
            ident = self.identity
            if self.bug == "stale_reattach":  # BUG: the first identity, not the latest
                ident = self.first_identity
            if ident is not None and self.bug != "no_reattach":  # BUG: no reattach
                await self._send(
                    _frame("reattach", previous_worker_id=ident[0], reattach_token=ident[1])
                )
            replay = not (self.bug == "no_replay" and self.connections > 0)  # BUG: no replay
            if replay:
                for tid, (desc, _h) in self.trigger_types.items():
                    await self._send(_frame("registertriggertype", id=tid, description=desc))
                for fid in self.functions:
                    await self._send(_frame("registerfunction", id=fid))
                    if self.bug == "duplicate_replay":  # BUG: replayed twice per connection
                        await self._send(_frame("registerfunction", id=fid))
                for trig in self.triggers.values():
                    await self._send(trig)
            while self.queue:
                frame = self.queue.popleft()
                stale = frame.get("invocation_id") and frame["invocation_id"] not in self.pending
                if frame["type"] == "invokefunction" and stale:
                    continue  # its caller already timed out (Node's rule)
                await self._send(frame)
            await self._send(
                _frame(
                    "invokefunction",
                    function_id=METADATA_FN,
                    data=self._metadata(),
                    action={"type": "void"},
                )
            )
            self.connections += 1

    def _metadata(self) -> dict[str, Any]:
        return {
            "runtime": "python",
            "version": VERSION,
            "name": self.name,
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "isolation": None,
            "namespace": None,
            "telemetry": {"language": "C", "project_name": "mini", "framework": "mini-sdk"},
        }

    async def shutdown(self) -> None:
        self._closing = True
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(InvocationError("SHUTDOWN", "iii is shutting down"))
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000), 3)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._loop_task, 3)
        self._set_state("disconnected")

    # --- receiving ---------------------------------------------------------------------------
    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                msg = json.loads(raw)
            except Exception:  # bad JSON, bad UTF-8, nesting too deep
                log.warning("undecodable frame ignored: %r", raw[:200])
                if self.bug == "drops_malformed":  # BUG: stop reading, socket left open
                    await asyncio.Event().wait()
                continue
            try:
                self._dispatch(msg)
            except Exception:  # a frame we cannot act on never stops the loop (§11.14)
                log.warning("frame ignored: %r", raw[:200], exc_info=True)

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            raise ValueError("not a JSON object")
        kind = msg.get("type")
        if kind == "workerregistered":
            self.identity = (msg.get("worker_id"), msg.get("reattach_token"))
            if self.first_identity is None:
                self.first_identity = self.identity
        elif kind == "invokefunction":
            if not isinstance(msg.get("function_id"), str):
                raise ValueError("invokefunction without a string function_id")
            self._spawn(self._handle_invoke(msg))
        elif kind == "invocationresult":
            inv_id = msg.get("invocation_id")
            fut = self.pending.get(inv_id) if isinstance(inv_id, str) else None
            if fut is None or fut.done():
                log.debug("result for no pending invocation dropped")
            elif msg.get("error") is not None:
                err = msg["error"] if isinstance(msg["error"], dict) else {"message": msg["error"]}
                fut.set_exception(InvocationError(err.get("code"), str(err.get("message", ""))))
            else:
                fut.set_result(msg.get("result"))
        elif kind in ("registertrigger", "unregistertrigger"):
            self._spawn(self._handle_provider_call(msg))
        elif kind == "registrationrejected":
            self._handle_rejected(msg)
        # ping, pong, error and unknown types are ignored (§11.14)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _handle_invoke(self, msg: dict[str, Any]) -> None:
        fid = msg.get("function_id")
        inv_id = msg.get("invocation_id")
        handler = self.functions.get(fid)
        data = msg.get("data")
        if self.bug == "payload_mangling":  # BUG: lossy payload handling
            data = mangle(data)
        if handler is None:
            if inv_id is None or self.bug == "no_not_found_reply":  # BUG: no reply
                return
            err = {"code": "function_not_found", "message": f"Function '{fid}' not found"}
            await self._send_or_queue(
                _frame("invocationresult", invocation_id=inv_id, function_id=fid, error=err)
            )
            return
        try:
            result = await handler(data, inv_id)
            reply = {"type": "invocationresult", "invocation_id": inv_id, "function_id": fid}
            reply["result"] = result  # an explicit null is kept, as Python 0.25 does
        except Exception as e:
            err = {
                "code": "invocation_failed",
                "message": str(e),
                "stacktrace": traceback.format_exc(),
            }
            reply = _frame("invocationresult", invocation_id=inv_id, function_id=fid, error=err)
        if inv_id is not None:
            await self._send_or_queue(reply)

    async def _handle_provider_call(self, msg: dict[str, Any]) -> None:
        entry = self.trigger_types.get(msg.get("trigger_type"))
        op = "register" if msg["type"] == "registertrigger" else "unregister"
        error = None
        if entry is not None:
            try:
                await entry[1](op, msg)
            except Exception as e:
                error = {"code": "trigger_registration_failed", "message": str(e)}
        else:
            error = {"code": "trigger_type_not_found", "message": "Trigger type not found"}
        if op == "register":
            await self._send_or_queue(
                _frame(
                    "triggerregistrationresult",
                    id=msg.get("id"),
                    trigger_type=msg.get("trigger_type"),
                    function_id=msg.get("function_id"),
                    error=error,
                )
            )

    def _handle_rejected(self, msg: dict[str, Any]) -> None:
        """§7.3: FUNCTION_NAMESPACE_CONFLICT is a warning; anything else is fatal."""
        code = msg.get("code")
        if code == "FUNCTION_NAMESPACE_CONFLICT":
            log.warning("function registration rejected: %s", msg)
            return
        self.fatal = InvocationError(code, f"registration rejected: {msg}")
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(self.fatal)
        self._set_state("failed")
        if self._ws is not None:
            self._spawn(self._ws.close())

    # --- sending -----------------------------------------------------------------------------
    async def _send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(frame, separators=(",", ":"), ensure_ascii=False))

    async def _send_or_queue(self, frame: dict[str, Any]) -> None:
        """Invokes and results made while disconnected wait in the offline queue (§7.2)."""
        async with self._lock:  # never overtakes a replay in progress
            if self._open and self._ws is not None:
                try:
                    await self._send(frame)
                    return
                except Exception:
                    pass
            self.queue.append(frame)

    async def _send_if_open(self, frame: dict[str, Any]) -> None:
        """Registrations are not queued: the replay re-sends them from the registries."""
        async with self._lock:
            if self._open and self._ws is not None:
                with contextlib.suppress(Exception):
                    await self._send(frame)

    # --- public API --------------------------------------------------------------------------
    async def register_function(self, fid: str, handler: Handler) -> None:
        if fid in self.functions:
            raise ValueError(f"function id already registered: {fid}")
        async with self._lock:
            self.functions[fid] = handler
            if self._open and self._ws is not None:
                with contextlib.suppress(Exception):
                    await self._send(_frame("registerfunction", id=fid))

    async def unregister_function(self, fid: str) -> None:
        if fid not in self.functions:
            raise KeyError(fid)
        if self.bug != "replays_unregistered":  # BUG: stays in the replay set
            del self.functions[fid]
        await self._send_if_open(_frame("unregisterfunction", id=fid))

    async def register_trigger_type(
        self, type_id: str, description: str, handler: TriggerTypeHandler
    ) -> None:
        async with self._lock:
            self.trigger_types[type_id] = (description, handler)
            if self._open and self._ws is not None:
                with contextlib.suppress(Exception):
                    await self._send(
                        _frame("registertriggertype", id=type_id, description=description)
                    )

    async def unregister_trigger_type(self, type_id: str) -> None:
        self.trigger_types.pop(type_id, None)
        await self._send_if_open(_frame("unregistertriggertype", id=type_id))

    async def register_trigger(self, trigger_type: str, function_id: str, config: Any) -> str:
        tid = str(uuid.uuid4())  # kept, so replays re-use the id (§11.4)
        frame = _frame(
            "registertrigger", id=tid, trigger_type=trigger_type, function_id=function_id
        )
        frame["config"] = config
        async with self._lock:
            self.triggers[tid] = frame
            if self._open and self._ws is not None:
                with contextlib.suppress(Exception):
                    await self._send(frame)
        return tid

    async def unregister_trigger(self, tid: str) -> None:
        frame = self.triggers.pop(tid)
        await self._send_if_open(
            _frame("unregistertrigger", id=tid, trigger_type=frame["trigger_type"])
        )

    async def trigger(
        self, function_id: str, payload: Any, timeout_ms: float | None = None, void: bool = False
    ) -> Any:
        """Call a function through the engine; ``timeout_ms`` 0/None means the default."""
        if self.fatal is not None:
            raise self.fatal
        if self.bug == "payload_mangling":  # BUG: lossy payload handling
            payload = mangle(payload)
        frame = _frame("invokefunction", function_id=function_id)
        frame["data"] = payload
        if void:
            frame["action"] = {"type": "void"}
            await self._send_or_queue(frame)
            return None
        inv_id = str(uuid.uuid4())
        frame["invocation_id"] = inv_id
        ms = timeout_ms or self.invocation_timeout_ms
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[inv_id] = fut
        wait_s: float | None = ms / 1000
        if self.bug == "timeout_early":  # BUG: half the timeout
            wait_s = ms / 2000
        if self.bug == "timeout_never_fires":  # BUG: no timeout at all
            wait_s = None
        try:
            await self._send_or_queue(frame)
            return await asyncio.wait_for(asyncio.shield(fut), wait_s)
        except asyncio.TimeoutError:
            raise InvocationError("TIMEOUT", f"invocation timed out after {ms:g}ms") from None
        finally:
            self.pending.pop(inv_id, None)
