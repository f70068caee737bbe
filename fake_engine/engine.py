"""The scriptable fake iii engine: accepts workers, keeps the registry, routes invocations.

Behaviour follows engine 0.23 (iii-protocol.md §3, §5, §8, §10). Where the fake deliberately
differs, the difference is named in a comment starting with ``DIFFERENCE:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from websockets.frames import Frame, Opcode

from . import handshake as hs
from .builtins import BUILTINS
from .faults import FrameRule, first_match
from .protocol import (
    ENGINE_INBOUND,
    TELEMETRY_PREFIXES,
    DecodeError,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    decode_json,
    error_body,
    from_object,
)
from .registry import DEFAULT_NS, FunctionEntry, Registry, TriggerEntry, TriggerTypeEntry
from .transcript import (
    DISCONNECT,
    FRAME,
    HANDSHAKE,
    HTTP_REQUEST,
    IN,
    TCP_ACCEPT,
    Event,
    Transcript,
    WaitTimeout,
)
from .wire import WireSocket

NAMESPACED = (
    RegisterFunction,
    UnregisterFunction,
    RegisterTrigger,
    UnregisterTrigger,
    RegisterTriggerType,
    RegisterService,
)


class EngineStartError(RuntimeError):
    """The engine could not listen (port in use, bad address)."""


@dataclass
class EngineConfig:
    host: str = "127.0.0.1"
    port: int = 0
    send_workerregistered: bool = True
    features: list[str] | None = None  # engine 0.23 sends none; 0.25 SDKs then stay legacy
    # Engine HEAD buffers registrations until `engine::workers::register` names the namespace,
    # or this grace period ends (REGISTRATION_NAMESPACE_GRACE, 5 s).
    namespace_grace_s: float = 5.0
    handshake_timeout_s: float = 10.0
    reattach_evict_timeout_s: float = 5.0
    builtin_trigger_types: tuple[str, ...] = ("http", "cron", "queue")
    add_caller_worker_id: bool = True  # the engine adds `_caller_worker_id` to object payloads
    accept_unregistertriggertype: bool = False
    enforce_worker_names: bool = True


@dataclass
class Connection:
    id: int
    sock: WireSocket
    peer: str
    worker_id: str
    reattach_token: str
    connected_ns: int
    connected_at_ms: int
    metadata: dict[str, Any] | None = None
    namespace: str | None = None
    buffered: list[Message] = field(default_factory=list)
    grace: asyncio.TimerHandle | None = None
    running: set[str] = field(default_factory=set)  # invocation ids this worker is running
    calling: set[str] = field(default_factory=set)  # invocation ids this worker is waiting on
    frames_in: int = 0
    frames_out: int = 0
    alive: bool = True
    held: list[str] = field(default_factory=list)  # outbound frames held back (reorder fault)
    answer_pings: bool = True
    epoch: int = 0  # engine life this connection belongs to (restart increments it)

    @property
    def name(self) -> str | None:
        return (self.metadata or {}).get("name")

    @property
    def ns(self) -> str:
        return self.namespace or DEFAULT_NS


@dataclass
class Invocation:
    id: str
    function_id: str
    target: int
    caller: int | None  # None: the scripting API
    void: bool
    future: asyncio.Future[InvocationOutcome] | None = None
    started_ns: int = field(default_factory=time.monotonic_ns)


@dataclass
class InvocationOutcome:
    """What a caller got back: ``result`` or ``error`` ({code, message, stacktrace?})."""

    invocation_id: str | None
    result: Any = None
    error: dict[str, Any] | None = None
    target: int | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Intercept:
    """Scripted answer to calls workers make to ``function_id``."""

    function_id: str
    result: Any = None
    error: dict[str, Any] | None = None
    delay_s: float = 0.0
    never: bool = False
    handler: Callable[[Any, Connection], Any] | None = None
    times: int | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)


class FakeEngine:
    """``async with FakeEngine() as engine:`` serves on an ephemeral loopback port."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        transcript_sink: TextIO | None = None,
        live: Callable[[Event], None] | None = None,
        **overrides: Any,
    ):
        self.config = config or EngineConfig()
        for k, v in overrides.items():
            if not hasattr(self.config, k):
                raise TypeError(f"unknown engine option {k!r}")
            setattr(self.config, k, v)
        self.transcript = Transcript(sink=transcript_sink, live=live)
        self.registry = Registry(self.config.builtin_trigger_types)
        self.connections: dict[int, Connection] = {}
        self.invocations: dict[str, Invocation] = {}
        self.intercepts: dict[str, Intercept] = {}
        self.frame_rules: list[FrameRule] = []
        self.handshake: hs.HandshakeMode = hs.Accept()
        self._handshake_left: int | None = None
        self.answer_pings = True
        self.telemetry_frames: dict[str, int] = {p.decode(): 0 for p in TELEMETRY_PREFIXES}
        self.epoch = 0
        self.port = self.config.port
        self._server: asyncio.base_events.Server | None = None
        self._next_conn = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sockets: set[WireSocket] = set()
        self._worker_names: dict[tuple[str, str], int] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        host = self.config.host
        return f"ws://[{host}]:{self.port}" if ":" in host else f"ws://{host}:{self.port}"

    async def start(self) -> None:
        await self.start_listening()

    async def start_listening(self) -> None:
        """Listen (again) on the engine's port; a dial then connects instead of being refused."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(
                self._on_tcp, self.config.host, self.port, reuse_address=True, backlog=512
            )
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise EngineStartError(
                f"fake engine cannot listen on {self.config.host}:{self.port}: {reason}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self.transcript.note(0, "listening", host=self.config.host, port=self.port)

    async def stop_listening(self) -> None:
        """Close the listener: new dials get ECONNREFUSED; live connections stay up."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        self.transcript.note(0, "stopped_listening")

    async def stop(self) -> None:
        await self.stop_listening()
        for sock in list(self._sockets):
            sock.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        for inv in list(self.invocations.values()):
            if inv.future and not inv.future.done():
                inv.future.cancel()

    async def restart(self, down_s: float = 0.0) -> None:
        """Die and come back: every connection reset, registry emptied, identities forgotten.

        Reattach tokens of the old life are no longer valid, as after a real engine restart.
        """
        await self.stop_listening()
        for conn in self.live_connections():
            conn.sock.abort(reset=True)
            self._cleanup(conn, "engine restart")
        self.registry = Registry(self.config.builtin_trigger_types)
        self._worker_names.clear()
        self.epoch += 1
        self.transcript.note(0, "restart", epoch=self.epoch)
        if down_s:
            await asyncio.sleep(down_s)
        await self.start_listening()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- handshake --------------------------------------------------------------------------------

    def set_handshake(self, mode: hs.HandshakeMode, times: int | None = None) -> None:
        """Answer the next ``times`` dials (all, when None) with ``mode``, then accept again."""
        self.handshake = mode
        self._handshake_left = times
        self.transcript.note(0, "handshake_mode", mode=hs.describe(mode), times=times)

    def _take_handshake(self) -> hs.HandshakeMode:
        mode = self.handshake
        if self._handshake_left is not None:
            self._handshake_left -= 1
            if self._handshake_left <= 0:
                self.handshake, self._handshake_left = hs.Accept(), None
        return mode

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_conn += 1
        cid = self._next_conn
        peer = writer.get_extra_info("peername")
        sock = WireSocket(cid, reader, writer, self.transcript)
        self._sockets.add(sock)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            self.transcript.record(cid, TCP_ACCEPT, detail={"peer": str(peer)})
            await self._serve(sock, str(peer[0]) if peer else "")
        except asyncio.CancelledError:
            sock.abort()
        finally:
            self._sockets.discard(sock)
            if task is not None:
                self._tasks.discard(task)
            if not writer.is_closing():
                writer.transport.abort()

    async def _serve(self, sock: WireSocket, peer: str) -> None:
        cid = sock.conn_id
        request = await sock.read_request(self.config.handshake_timeout_s)
        if request is None:
            self.transcript.record(cid, HANDSHAKE, detail={"result": "no_request"})
            return
        path = request.path
        self.transcript.record(
            cid,
            HTTP_REQUEST,
            detail={
                "path": path,
                "headers": {k.lower(): v for k, v in request.headers.raw_items()},
            },
        )
        route = path.split("?")[0]
        if route == "/otel":
            if sock.accept(request):
                self.transcript.record(cid, HANDSHAKE, detail={"result": "accepted", "path": route})
                await sock.frames(
                    lambda op, data: self._on_telemetry(cid, op, data), lambda f: None
                )
            return
        if route != "/":
            sock.reject(404, "Not Found\n")
            self.transcript.record(cid, HANDSHAKE, detail={"result": "refused", "status": 404})
            return
        mode = self._take_handshake()
        if isinstance(mode, hs.Refuse):
            sock.reject(mode.status, mode.body)
            self.transcript.record(
                cid, HANDSHAKE, detail={"result": "refused", "status": mode.status}
            )
            await asyncio.sleep(0)
            return
        if isinstance(mode, hs.CloseBeforeUpgrade):
            self.transcript.record(cid, HANDSHAKE, detail={"result": "closed_before_upgrade"})
            sock.abort()
            return
        if isinstance(mode, hs.Stall):
            self.transcript.record(cid, HANDSHAKE, detail={"result": "stalled"})
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(sock.reader.read(), mode.limit_s)
            return
        if not sock.accept(request):
            self.transcript.record(cid, HANDSHAKE, detail={"result": "bad_upgrade"})
            return
        self.transcript.record(cid, HANDSHAKE, detail={"result": "accepted", "path": "/"})
        if isinstance(mode, hs.CloseAfterOpen):
            sock.close(mode.code, mode.reason)
            await sock.frames(lambda op, d: None, lambda f: None)
            self._record_disconnect(sock)
            return
        if isinstance(mode, hs.AbortAfterOpen):
            sock.abort()
            return
        await self._run_worker(sock, peer)

    # -- worker connection ------------------------------------------------------------------------

    async def _run_worker(self, sock: WireSocket, peer: str) -> None:
        sock.proto.answer_pings = self.answer_pings
        now = time.monotonic_ns()
        conn = Connection(
            id=sock.conn_id,
            sock=sock,
            peer=peer,
            worker_id=str(uuid.uuid4()),
            reattach_token=str(uuid.uuid4()),
            connected_ns=now,
            connected_at_ms=int(time.time() * 1000),
            answer_pings=self.answer_pings,
            epoch=self.epoch,
        )
        self.connections[conn.id] = conn
        for rule in self.frame_rules:
            if rule.next_worker and rule.conn is None:
                rule.conn = conn.id  # bound to the first worker connection after it was added
        loop = asyncio.get_running_loop()
        conn.grace = loop.call_later(self.config.namespace_grace_s, self._namespace_grace, conn)
        if self.config.send_workerregistered:
            msg: dict[str, Any] = {
                "type": "workerregistered",
                "worker_id": conn.worker_id,
                "reattach_token": conn.reattach_token,
            }
            if self.config.features is not None:
                msg["features"] = list(self.config.features)
            self.send(conn, msg)
        try:
            await sock.frames(
                lambda op, data: self._on_message(conn, op, data),
                lambda frame: self._on_control(conn, frame),
            )
        finally:
            self._record_disconnect(sock)
            self._cleanup(conn, "disconnect")

    def _record_disconnect(self, sock: WireSocket) -> None:
        p = sock.proto
        rcvd = p.close_rcvd
        self.transcript.record(
            sock.conn_id,
            DISCONNECT,
            detail={
                "code": rcvd.code if rcvd else (1006 if not p.close_sent else None),
                "reason": rcvd.reason if rcvd else "",
                "clean": rcvd is not None,
                "by": sock.closed_by or ("worker" if rcvd else "transport"),
            },
        )

    def _on_control(self, conn: Connection, frame: Frame) -> None:
        op = frame.opcode.name.lower()
        detail: dict[str, Any] = {"bytes": len(frame.data)}
        if frame.opcode is Opcode.CLOSE:
            rcvd = conn.sock.proto.close_rcvd
            if rcvd is not None:
                detail.update(code=rcvd.code, reason=rcvd.reason)
            conn.sock.closed_by = conn.sock.closed_by or "worker"
        elif frame.opcode is Opcode.PING:
            detail["answered"] = conn.sock.proto.answer_pings
        self.transcript.record(conn.id, FRAME, direction=IN, opcode=op, detail=detail)

    def _on_telemetry(self, cid: int, op: Opcode, data: bytes) -> None:
        prefix = data[:4].decode("ascii", "replace")
        if prefix in self.telemetry_frames:
            self.telemetry_frames[prefix] += 1
        self.transcript.record(
            cid,
            FRAME,
            direction=IN,
            opcode=op.name.lower(),
            detail={"telemetry": prefix, "bytes": len(data)},
        )

    def _on_message(self, conn: Connection, op: Opcode, data: bytes) -> None:
        conn.frames_in += 1
        if op is Opcode.BINARY and data[:4] in TELEMETRY_PREFIXES:
            self._on_telemetry(conn.id, op, data)
            return
        raw = data.decode("utf-8", "replace")
        if not raw.strip():
            self.transcript.record(
                conn.id,
                FRAME,
                direction=IN,
                opcode=op.name.lower(),
                raw=raw,
                detail={"ignored": "blank"},
            )
            return
        allowed = ENGINE_INBOUND
        if self.config.accept_unregistertriggertype:
            allowed = ENGINE_INBOUND | {"unregistertriggertype"}
        obj = None
        try:
            obj = decode_json(data)
            msg = from_object(obj, allowed=allowed)
        except DecodeError as exc:
            # The engine logs `json decode error` and keeps the connection open.
            self.transcript.record(
                conn.id, FRAME, direction=IN, opcode=op.name.lower(), raw=raw[:4096], error=str(exc)
            )
            return
        wire = obj
        self.transcript.record(
            conn.id,
            FRAME,
            direction=IN,
            opcode=op.name.lower(),
            raw=raw if len(raw) <= 65536 else raw[:65536],
            message=wire,
        )
        rule = first_match(self.frame_rules, "in", conn.id, conn.frames_in, wire)
        if rule is not None:
            self.transcript.note(conn.id, "frame_fault", rule=rule.describe(), type=msg.TYPE)
            if rule.action == "drop":
                return
            if rule.action == "delay":
                asyncio.get_running_loop().call_later(rule.delay_s, self._dispatch_live, conn, msg)
                return
            if rule.action == "duplicate":
                self._dispatch(conn, msg)
            elif rule.action in ("close", "abort"):
                # Cut *after* this frame: it is handled first, as if the link died just then.
                self._dispatch(conn, msg)
                self.drop(conn, rule.action, rule.close_code)
                return
        self._dispatch(conn, msg)

    def _dispatch_live(self, conn: Connection, msg: Message) -> None:
        if conn.alive:
            self._dispatch(conn, msg)

    # -- sending -----------------------------------------------------------------------------------

    def send(self, conn: Connection, message: dict[str, Any] | Message) -> bool:
        """Send one protocol message, subject to the outbound frame rules."""
        wire = message.to_wire() if isinstance(message, Message) else message
        conn.frames_out += 1
        rule = first_match(self.frame_rules, "out", conn.id, conn.frames_out, wire)
        text = _encode(wire)
        if rule is not None:
            self.transcript.note(
                conn.id, "frame_fault", rule=rule.describe(), type=wire.get("type")
            )
            if rule.action == "drop":
                return False
            if rule.action == "delay":
                asyncio.get_running_loop().call_later(
                    rule.delay_s, lambda: conn.sock.send_text(text, wire)
                )
                return True
            if rule.action == "hold":
                conn.held.append(text)
                return True
            if rule.action == "duplicate":
                conn.sock.send_text(text, wire)
            elif rule.action in ("close", "abort"):
                self.drop(conn, rule.action, rule.close_code)
                return False
        ok = conn.sock.send_text(text, wire)
        while conn.held:
            held = conn.held.pop(0)
            conn.sock.send_text(held, _decode_quiet(held))
        return ok

    def send_raw(
        self, conn: Connection, payload: str | bytes, *, binary: bool = False, fin: bool = True
    ) -> None:
        """Write a frame with arbitrary content (malformed JSON, unknown types, oversize)."""
        data = payload.encode() if isinstance(payload, str) else payload
        conn.sock.send_raw_frame(Opcode.BINARY if binary else Opcode.TEXT, data, fin=fin)

    # -- dispatch (one frame at a time, in arrival order, like `router_msg`) ------------------------

    def _dispatch(self, conn: Connection, msg: Message) -> None:
        if isinstance(msg, NAMESPACED) and conn.namespace is None:
            conn.buffered.append(msg)
            return
        handler = _HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, conn, msg)

    def _namespace_grace(self, conn: Connection) -> None:
        if conn.alive and conn.namespace is None:
            self.transcript.note(conn.id, "namespace_grace_elapsed")
            self._set_namespace(conn, DEFAULT_NS)

    def _set_namespace(self, conn: Connection, ns: str) -> None:
        conn.namespace = ns
        if conn.grace is not None:
            conn.grace.cancel()
            conn.grace = None
        buffered, conn.buffered = conn.buffered, []
        for m in buffered:
            self._dispatch(conn, m)

    def _register_worker_metadata(self, conn: Connection, data: dict[str, Any]):
        ns = data.get("namespace")
        if isinstance(ns, str) and not ns.strip():
            return None, error_body("INVALID_NAMESPACE", "namespace must not be blank")
        ns = ns if isinstance(ns, str) else DEFAULT_NS
        conn.metadata = {k: v for k, v in data.items() if k != "_caller_worker_id"}
        self.transcript.note(
            conn.id,
            "worker_metadata",
            name=data.get("name"),
            runtime=data.get("runtime"),
            version=data.get("version"),
        )
        name = data.get("name")
        if self.config.enforce_worker_names and isinstance(name, str) and name.strip():
            holder = self._worker_names.get((ns, name))
            if holder is not None and holder != conn.id and self.is_live(holder):
                self.reject_registration(
                    conn,
                    "WORKER_NAMESPACE_CONFLICT",
                    namespace=ns,
                    worker_name=name,
                    owner_worker_id=self.connections[holder].worker_id,
                )
                conn.buffered.clear()
                conn.sock.abort()  # the engine sends a Close frame with no status
                return {"success": False}, None
            self._worker_names[(ns, name)] = conn.id
        self._set_namespace(conn, ns)
        return {"success": True}, None

    def _on_registerfunction(self, conn: Connection, msg: RegisterFunction) -> None:
        entry = FunctionEntry(
            msg.id,
            conn.ns,
            conn.id,
            msg.description,
            msg.metadata,
            msg.request_format,
            msg.response_format,
        )
        conflict = self.registry.claim_function(entry, self.is_live)
        if conflict is not None:
            self.reject_registration(
                conn,
                "FUNCTION_NAMESPACE_CONFLICT",
                namespace=conn.ns,
                function_id=msg.id,
                owner_worker_id=self.connections[conflict.owner].worker_id,
            )

    def _on_unregisterfunction(self, conn: Connection, msg: UnregisterFunction) -> None:
        self.registry.release_function(conn.ns, msg.id, conn.id)

    def _on_registertriggertype(self, conn: Connection, msg: RegisterTriggerType) -> None:
        ns = msg.namespace or conn.ns
        self.registry.trigger_types[(ns, msg.id)] = TriggerTypeEntry(
            msg.id, ns, conn.id, msg.description
        )
        for t in self.registry.triggers_for_type(msg.id):
            self._activate_trigger(t)

    def _on_unregistertriggertype(self, conn: Connection, msg: UnregisterTriggerType) -> None:
        key = (msg.namespace or conn.ns, msg.id)
        entry = self.registry.trigger_types.get(key)
        if entry is not None and entry.owner == conn.id:
            del self.registry.trigger_types[key]

    def _on_registertrigger(self, conn: Connection, msg: RegisterTrigger) -> None:
        for field_name in ("namespace", "trigger_namespace"):
            v = getattr(msg, field_name)
            if isinstance(v, str) and not v.strip():
                self.send(
                    conn,
                    TriggerRegistrationResult(
                        id=msg.id,
                        trigger_type=msg.trigger_type,
                        function_id=msg.function_id,
                        error=error_body("INVALID_NAMESPACE", f"{field_name} must not be blank"),
                    ),
                )
                return
        entry = TriggerEntry(
            msg.id,
            msg.trigger_type,
            msg.function_id,
            msg.config,
            conn.id,
            msg.namespace or conn.ns,
            msg.trigger_namespace or DEFAULT_NS,
            msg.metadata,
        )
        old = self.registry.triggers.get(msg.id)
        self.registry.triggers[msg.id] = entry  # same id replaces the old entry
        if old is not None and old.owner != conn.id:
            self.transcript.note(conn.id, "trigger_replaced", id=msg.id, previous_owner=old.owner)
        self._activate_trigger(entry)

    def _activate_trigger(self, t: TriggerEntry) -> None:
        tt = self.registry.trigger_type(t.trigger_namespace, t.trigger_type)
        if tt is None:
            t.status = "parked"  # activated when the type is registered
            return
        t.status = "active"
        provider = self.connections.get(tt.owner) if tt.owner is not None else None
        if provider is not None and provider.alive:
            msg = {
                "type": "registertrigger",
                "id": t.id,
                "trigger_type": t.trigger_type,
                "function_id": t.function_id,
                "config": t.config,
            }
            if t.metadata is not None:
                msg["metadata"] = t.metadata
            if t.namespace != DEFAULT_NS:
                msg["namespace"] = t.namespace
            if t.trigger_namespace != DEFAULT_NS:
                msg["trigger_namespace"] = t.trigger_namespace
            self.send(provider, msg)

    def _on_unregistertrigger(self, conn: Connection, msg: UnregisterTrigger) -> None:
        t = self.registry.triggers.get(msg.id)
        if t is None or t.owner != conn.id:
            return
        del self.registry.triggers[msg.id]
        self._tell_provider_unregister(t)

    def _tell_provider_unregister(self, t: TriggerEntry) -> None:
        tt = self.registry.trigger_type(t.trigger_namespace, t.trigger_type)
        provider = self.connections.get(tt.owner) if tt and tt.owner is not None else None
        if provider is not None and provider.alive and t.status == "active":
            self.send(
                provider, {"type": "unregistertrigger", "id": t.id, "trigger_type": t.trigger_type}
            )

    def _on_triggerregistrationresult(self, conn: Connection, msg: TriggerRegistrationResult):
        t = self.registry.triggers.get(msg.id)
        if t is None or msg.error is None:
            return
        owner = self.connections.get(t.owner)
        t.status = "parked"
        if owner is not None and owner.alive:
            self.send(owner, msg)

    def _on_registerservice(self, conn: Connection, msg: RegisterService) -> None:
        self.registry.services[(conn.ns, msg.id)] = msg.to_wire()

    def _on_ping(self, conn: Connection, msg: Ping) -> None:
        self.send(conn, {"type": "pong"})

    def _on_reattach(self, conn: Connection, msg: Reattach) -> None:
        old = next(
            (
                c
                for c in self.connections.values()
                if c.worker_id == msg.previous_worker_id and c.epoch == self.epoch
            ),
            None,
        )
        if old is None or old.id == conn.id:
            self.transcript.note(
                conn.id,
                "reattach_ignored",
                reason="unknown worker id",
                previous_worker_id=msg.previous_worker_id,
            )
            return
        if msg.reattach_token != old.reattach_token:
            self.transcript.note(
                conn.id,
                "reattach_ignored",
                reason="token mismatch",
                previous_worker_id=msg.previous_worker_id,
            )
            return
        if not old.alive:
            # The engine unregisters a worker on cleanup, so its id is unknown by now.
            self.transcript.note(
                conn.id,
                "reattach_ignored",
                reason="previous connection gone",
                previous_worker_id=msg.previous_worker_id,
                previous_conn=old.id,
            )
            return
        old.sock.abort()
        self._cleanup(old, f"evicted by reattach from connection {conn.id}")
        self.transcript.note(
            conn.id, "reattach_accepted", previous_conn=old.id, previous_worker_id=old.worker_id
        )

    # -- invocations ------------------------------------------------------------------------------

    def not_found_message(self, fid: str, ns: str) -> str:
        msg = f"Function {fid} not found in namespace {ns}."
        elsewhere = [n for n in self.registry.namespaces_of(fid) if n != ns]
        if elsewhere:
            msg += f" It is registered in namespace(s): {', '.join(elsewhere)}."
        return msg

    def _reply(
        self,
        conn: Connection,
        inv_id: str | None,
        fid: str,
        result: Any,
        error: dict[str, Any] | None,
        **extra: Any,
    ) -> None:
        """Send an ``invocationresult`` (result or error, plus trace headers) unless void."""
        if inv_id is None or not conn.alive:
            return
        msg: dict[str, Any] = {
            "type": "invocationresult",
            "invocation_id": inv_id,
            "function_id": fid,
        }
        if error is not None:
            msg["error"] = error
        else:
            msg["result"] = result
        msg.update({k: v for k, v in extra.items() if v is not None})
        self.send(conn, msg)

    def _on_invokefunction(self, conn: Connection, msg: InvokeFunction) -> None:
        fid = msg.function_id
        inv_id = None if msg.is_void else msg.invocation_id
        if fid in BUILTINS:
            result, error = BUILTINS[fid](self, conn, msg.data)
            self._reply(conn, inv_id, fid, result, error)
            return
        icpt = self.intercepts.get(fid)
        if icpt is not None:
            self._run_intercept(conn, msg, icpt, inv_id)
            return
        ns = msg.namespace or DEFAULT_NS
        target = self.registry.resolve(ns, fid)
        if target is None or not self.is_live(target.owner):
            self._reply(
                conn,
                inv_id,
                fid,
                None,
                error_body("function_not_found", self.not_found_message(fid, ns)),
            )
            return
        data = msg.data
        if self.config.add_caller_worker_id and isinstance(data, dict):
            data = {**data, "_caller_worker_id": conn.worker_id}
        self._route(
            fid,
            data,
            target.owner,
            caller=conn.id,
            void=inv_id is None,
            invocation_id=msg.invocation_id,
            traceparent=msg.traceparent,
            baggage=msg.baggage,
            metadata=msg.metadata,
        )

    def _run_intercept(
        self, conn: Connection, msg: InvokeFunction, icpt: Intercept, inv_id: str | None
    ) -> None:
        icpt.calls.append(
            {
                "conn": conn.id,
                "data": msg.data,
                "invocation_id": inv_id,
                "t_ns": time.monotonic_ns(),
            }
        )
        if icpt.times is not None:
            icpt.times -= 1
            if icpt.times <= 0:
                self.intercepts.pop(icpt.function_id, None)
        self.transcript.note(
            conn.id,
            "intercepted",
            function_id=msg.function_id,
            invocation_id=inv_id,
            never=icpt.never,
        )
        if icpt.never:
            return

        def answer() -> None:
            result, error = icpt.result, icpt.error
            if icpt.handler is not None:
                try:
                    result = icpt.handler(msg.data, conn)
                except Exception as exc:  # the script's handler failing is an answer too
                    error = error_body("invocation_failed", str(exc))
            self._reply(conn, inv_id, msg.function_id, result, error)

        if icpt.delay_s > 0:
            asyncio.get_running_loop().call_later(icpt.delay_s, answer)
        else:
            answer()

    def _route(
        self,
        fid: str,
        data: Any,
        target_id: int,
        *,
        caller: int | None,
        void: bool,
        invocation_id: str | None = None,
        future: asyncio.Future | None = None,
        **extra: Any,
    ) -> Invocation:
        inv = Invocation(invocation_id or str(uuid.uuid4()), fid, target_id, caller, void, future)
        self.invocations[inv.id] = inv
        target = self.connections[target_id]
        target.running.add(inv.id)
        if caller is not None:
            self.connections[caller].calling.add(inv.id)
        out: dict[str, Any] = {
            "type": "invokefunction",
            "invocation_id": inv.id,
            "function_id": fid,
            "data": data,
        }
        out.update({k: v for k, v in extra.items() if v is not None})
        self.send(target, out)
        return inv

    def _on_invocationresult(self, conn: Connection, msg: InvocationResult) -> None:
        inv = self.invocations.get(msg.invocation_id)
        if inv is None or inv.target != conn.id:
            # Late results, results for void calls and results from a previous connection:
            # the engine drops them (`No pending invocation` at debug level).
            self.transcript.note(
                conn.id,
                "result_dropped",
                invocation_id=msg.invocation_id,
                reason="no pending invocation",
            )
            return
        self._finish(inv, msg.result, msg.error, traceparent=msg.traceparent, baggage=msg.baggage)

    def _finish(
        self, inv: Invocation, result: Any, error: dict[str, Any] | None, **extra: Any
    ) -> None:
        self.invocations.pop(inv.id, None)
        target = self.connections.get(inv.target)
        if target is not None:
            target.running.discard(inv.id)
        if inv.future is not None:
            if not inv.future.done():
                elapsed = (time.monotonic_ns() - inv.started_ns) / 1e6
                inv.future.set_result(InvocationOutcome(inv.id, result, error, inv.target, elapsed))
            return
        if inv.caller is None:
            return
        caller = self.connections.get(inv.caller)
        if caller is None:
            return
        caller.calling.discard(inv.id)
        if not inv.void:
            self._reply(caller, inv.id, inv.function_id, result, error, **extra)

    # -- cleanup ---------------------------------------------------------------------------------

    def _cleanup(self, conn: Connection, why: str) -> None:
        """`cleanup_worker`: run once per connection (iii-protocol.md §8.1)."""
        if not conn.alive:
            return
        conn.alive = False
        if conn.grace is not None:
            conn.grace.cancel()
        conn.buffered.clear()
        for t in self.registry.triggers_of(conn.id):
            self._tell_provider_unregister(t)
        removed = self.registry.release_connection(conn.id)
        for inv_id in list(conn.running) + list(conn.calling):
            inv = self.invocations.get(inv_id)
            if inv is None:
                continue
            if inv.target == conn.id:
                self._finish(inv, None, error_body("invocation_stopped", "Invocation stopped"))
            else:
                self.invocations.pop(inv_id, None)
                t = self.connections.get(inv.target)
                if t is not None:
                    t.running.discard(inv_id)
        conn.running.clear()
        conn.calling.clear()
        for key, holder in list(self._worker_names.items()):
            if holder == conn.id:
                del self._worker_names[key]
        self.transcript.note(conn.id, "cleanup", why=why, **removed)

    # -- scripting API ----------------------------------------------------------------------------

    def is_live(self, conn_id: int) -> bool:
        c = self.connections.get(conn_id)
        return c is not None and c.alive

    def live_connections(self) -> list[Connection]:
        return [c for c in self.connections.values() if c.alive]

    def connection(self, conn_id: int) -> Connection:
        return self.connections[conn_id]

    def worker(self, name: str) -> Connection | None:
        """The live connection whose metadata names this worker."""
        for c in self.live_connections():
            if c.name == name:
                return c
        return None

    async def wait_worker(
        self, name: str, timeout: float = 15.0, functions: tuple[str, ...] = ()
    ) -> Connection:
        """Wait until a live worker of this name has registered (and owns ``functions``)."""

        def ready() -> Connection | None:
            c = self.worker(name)
            if c is None or c.namespace is None:
                return None
            owned = {f.id for f in self.registry.functions_of(c.id)}
            return c if set(functions) <= owned else None

        return await self.wait_until(
            ready, timeout, f"worker {name!r} registered with functions {list(functions)}"
        )

    async def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll engine state until ``condition()`` is truthy; fail clearly after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = condition()
            if value:
                return value
            if loop.time() >= deadline:
                tail = "\n".join(e.to_json()[:300] for e in self.transcript.events[-8:])
                raise WaitTimeout(
                    f"timed out after {timeout:.1f}s waiting for {what}; last events:\n{tail}"
                )
            await asyncio.sleep(0.005)

    def functions(self) -> list[FunctionEntry]:
        return list(self.registry.functions.values())

    def function_ids(self) -> set[str]:
        return {f.id for f in self.registry.functions.values()}

    async def invoke(
        self,
        function_id: str,
        data: Any = None,
        *,
        namespace: str = DEFAULT_NS,
        timeout: float = 10.0,
        metadata: Any = None,
    ) -> InvocationOutcome:
        """Invoke a function as the engine would for an in-process caller."""
        if function_id in BUILTINS:
            result, error = BUILTINS[function_id](self, None, data)
            return InvocationOutcome(None, result, error)
        target = self.registry.resolve(namespace, function_id)
        if target is None or not self.is_live(target.owner):
            return InvocationOutcome(
                None,
                None,
                error_body("function_not_found", self.not_found_message(function_id, namespace)),
            )
        fut: asyncio.Future[InvocationOutcome] = asyncio.get_running_loop().create_future()
        inv = self._route(
            function_id,
            data if data is not None else {},
            target.owner,
            caller=None,
            void=False,
            future=fut,
            metadata=metadata,
        )
        # A timer instead of asyncio.wait_for: no extra task per call on the hot path.
        timer = asyncio.get_running_loop().call_later(
            timeout, lambda: fut.done() or fut.set_exception(asyncio.TimeoutError())
        )
        try:
            return await fut
        except asyncio.TimeoutError:
            self.invocations.pop(inv.id, None)
            raise WaitTimeout(
                f"no result for invocation {inv.id} of {function_id!r} on connection "
                f"{target.owner} within {timeout:.1f}s"
            ) from None
        finally:
            timer.cancel()

    def void_invoke(
        self, function_id: str, data: Any = None, *, namespace: str = DEFAULT_NS
    ) -> str | None:
        """Fire-and-forget invocation; the worker's answer is dropped. Returns the id sent."""
        target = self.registry.resolve(namespace, function_id)
        if target is None or not self.is_live(target.owner):
            return None
        return self._route(function_id, data, target.owner, caller=None, void=True).id

    def intercept(
        self,
        function_id: str,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        delay_s: float = 0.0,
        never: bool = False,
        handler: Callable[[Any, Connection], Any] | None = None,
        times: int | None = None,
    ) -> Intercept:
        """Answer calls workers make to ``function_id`` with a value, an error, late, or never."""
        icpt = Intercept(function_id, result, error, delay_s, never, handler, times)
        self.intercepts[function_id] = icpt
        return icpt

    def drop(
        self, conn: Connection | int, mode: str = "close", code: int = 1000, reason: str = ""
    ) -> None:
        """Drop a worker: ``close`` (close frame), ``abort`` (no close frame) or ``reset`` (RST)."""
        c = self.connections[conn] if isinstance(conn, int) else conn
        if mode == "close":
            c.sock.close(code, reason)
        elif mode in ("abort", "reset"):
            c.sock.abort(reset=mode == "reset")
        else:
            raise ValueError(f"unknown drop mode {mode!r}: expected close, abort or reset")

    def set_answer_pings(self, answer: bool, conn: Connection | None = None) -> None:
        """Stop (or resume) answering WebSocket pings, for one connection or all."""
        targets = [conn] if conn else self.live_connections()
        if conn is None:
            self.answer_pings = answer
        for c in targets:
            c.answer_pings = answer
            c.sock.proto.answer_pings = answer
        self.transcript.note(conn.id if conn else 0, "answer_pings", answer=answer)

    def reject_registration(
        self,
        conn: Connection,
        code: str,
        *,
        namespace: str = DEFAULT_NS,
        owner_worker_id: str = "",
        function_id: str | None = None,
        worker_name: str | None = None,
    ) -> None:
        msg: dict[str, Any] = {
            "type": "registrationrejected",
            "code": code,
            "namespace": namespace,
            "owner_worker_id": owner_worker_id,
        }
        if function_id is not None:
            msg["function_id"] = function_id
        if worker_name is not None:
            msg["worker_name"] = worker_name
        self.send(conn, msg)

    def add_frame_rule(self, rule: FrameRule) -> FrameRule:
        self.frame_rules.append(rule)
        return rule


def _encode(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def _decode_quiet(text: str) -> dict[str, Any] | None:
    try:
        return json.loads(text)
    except ValueError:
        return None


_HANDLERS: dict[type, Callable[[FakeEngine, Connection, Any], None]] = {
    RegisterFunction: FakeEngine._on_registerfunction,
    UnregisterFunction: FakeEngine._on_unregisterfunction,
    RegisterTriggerType: FakeEngine._on_registertriggertype,
    UnregisterTriggerType: FakeEngine._on_unregistertriggertype,
    RegisterTrigger: FakeEngine._on_registertrigger,
    UnregisterTrigger: FakeEngine._on_unregistertrigger,
    TriggerRegistrationResult: FakeEngine._on_triggerregistrationresult,
    RegisterService: FakeEngine._on_registerservice,
    Ping: FakeEngine._on_ping,
    Reattach: FakeEngine._on_reattach,
    InvokeFunction: FakeEngine._on_invokefunction,
    InvocationResult: FakeEngine._on_invocationresult,
}
