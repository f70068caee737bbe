"""replay.*: what a worker sends on every (re)connection after any mix of registrations,
unregistrations, drops and engine restarts.

Contract: seed-external-workers.md "Worker Lifecycle" ("On reconnect, the SDK re-registers
everything automatically"; metadata via ``engine::workers::register`` on connect) and the
properties iii-protocol.md §11.1-§11.5 and §11.13 derive from the SDK sources.

Each example interprets a generated operation list (conformance.strategies.replay_ops) against
one real worker and a model of what is live. After every reconnection the runner waits until
the engine holds everything the model says is live, then sends the worker an ``invokefunction``
for an unknown function (a *probe*): the SDK answers it only after reading every earlier frame
of that connection, so its answer proves the SDK has processed that connection's
``workerregistered``, which makes the identity the next ``reattach`` must carry deterministic.
The checks then grade the transcript, each for one property, so a verdict names what broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conformance.drivers.client import Driver, RegisteredTrigger
from conformance.profiles import examples
from conformance.scenario import Scenario, scenario
from conformance.strategies import Op, replay_ops
from conformance.verdict import check
from fake_engine import Connection, FakeEngine, FrameRule
from fake_engine.transcript import FRAME, IN, WaitTimeout

CONTRACT = "seed-external-workers.md#Worker Lifecycle"
META_FN = "engine::workers::register"
PROBE_FN = "rp::probe-unknown"

# Replay is not about backoff: a short first delay and no jitter keep every reconnection quick
# and its timing deterministic. The cap leaves room for Python's growth across mid-replay
# drops (its retry counter resets only after a full replay, sdk-behaviour.md §6.6).
QUICK = {
    "initial_delay_ms": 50,
    "max_delay_ms": 400,
    "backoff_multiplier": 2.0,
    "jitter_factor": 0.0,
}
# Bounds of the waits. A reconnection and replay took 55-95 ms (both SDKs, loopback, QUICK);
# an operation's frame reaches the engine in < 10 ms. The bounds only decide how long a broken
# SDK is waited for, never a verdict about timing, so they are generous for a loaded CI box.
REPLAY_WAIT_S = 5.0
OP_WAIT_S = 3.0
PROBE_WAIT_S = 3.0
# The probe answer already orders every replay frame before it (both SDKs send the whole replay
# before they read); a short quiet time also catches a duplicate sent asynchronously after it.
SETTLE_S = 0.05

_REG_TYPES = {"registerfunction": "fn", "registertriggertype": "type", "registertrigger": "trig"}
_ORDER = {"type": 0, "fn": 1, "trig": 2}


def trigger_config(name: str) -> dict[str, Any]:
    """Each trigger registration gets a unique ``api_path``: it names the trigger on the wire."""
    return {"api_path": f"/rp/{name}", "http_method": "POST"}


# --- what one example observed -------------------------------------------------------------------


@dataclass
class Live:
    """The model: what is registered in the SDK right now."""

    functions: set[str] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    triggers: dict[str, str] = field(default_factory=dict)  # name -> function id

    def keys(self) -> set[tuple[str, str]]:
        return (
            {("fn", f) for f in self.functions}
            | {("type", t) for t in self.types}
            | {("trig", trigger_config(n)["api_path"]) for n in self.triggers}
        )

    def copy(self) -> Live:
        return Live(set(self.functions), set(self.types), dict(self.triggers))


@dataclass
class ConnRecord:
    """One connection of the worker, as the runner saw it."""

    id: int
    cause: str  # "first", a drop mode, "restart", "mid_drop" (the reconnection after a drop)
    live: Live  # what the model said was live when the connection opened
    identities: list[tuple[str, str]]  # (worker_id, token) pairs a reattach may name
    worker_id: str = ""
    token: str = ""
    epoch: int = 0
    completed: bool = False  # everything live reached the engine and the probe was answered
    aborted_mid_replay: bool = False  # cut by a FrameRule while replaying
    replay_frames: int = 0  # inbound frames before the probe answer: the replay window
    registered: Counter[tuple[str, str]] = field(default_factory=Counter)  # by ops, not replay
    problem: str | None = None
    dial_gap_ms: float | None = None  # disconnect -> next upgrade request


@dataclass
class Run:
    ops: list[Op]
    engine: FakeEngine
    worker_name: str
    language: str
    version: str | None
    conns: list[ConnRecord] = field(default_factory=list)
    trigger_ids: dict[str, str] = field(default_factory=dict)  # name -> id seen on the wire
    trigger_fns: dict[str, str] = field(default_factory=dict)
    ever_functions: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)

    def inbound(self, conn: ConnRecord) -> list[dict[str, Any]]:
        return self.engine.transcript.messages(conn=conn.id, direction=IN)

    def reconnections(self) -> list[ConnRecord]:
        return self.conns[1:]

    def summary(self) -> list[dict[str, Any]]:
        """Per connection: why it opened, its first frame, what it replayed, how it ended."""
        out = []
        for c in self.conns:
            msgs = self.inbound(c)
            out.append(
                {
                    "conn": c.id,
                    "cause": c.cause,
                    "completed": c.completed,
                    "aborted_mid_replay": c.aborted_mid_replay,
                    "first_frame": _describe(msgs[0]) if msgs else None,
                    "frames": [_describe(m) for m in msgs[:16]],
                    "expected_live": sorted(f"{k}:{v}" for k, v in c.live.keys()),
                    "problem": c.problem,
                    "dial_gap_ms": c.dial_gap_ms,
                }
            )
        return out


def _describe(m: dict[str, Any]) -> str:
    t = m.get("type")
    if t == "reattach":
        return f"reattach({str(m.get('previous_worker_id'))[:8]})"
    if t in ("registerfunction", "registertriggertype", "unregisterfunction"):
        return f"{t}({m.get('id')})"
    if t == "registertrigger":
        return f"registertrigger({(m.get('config') or {}).get('api_path')}, {str(m.get('id'))[:8]})"
    if t in ("invokefunction", "invocationresult"):
        return f"{t}({m.get('function_id')})"
    return str(t)


def key_of(m: dict[str, Any]) -> tuple[str, str] | None:
    """The registration a replay frame carries, as a model key."""
    kind = _REG_TYPES.get(str(m.get("type")))
    if kind is None:
        return None
    if kind == "trig":
        cfg = m.get("config")
        return ("trig", str(cfg.get("api_path")) if isinstance(cfg, dict) else "?")
    return (kind, str(m.get("id")))


def is_metadata(m: dict[str, Any]) -> bool:
    return m.get("type") == "invokefunction" and m.get("function_id") == META_FN


# --- the runner ----------------------------------------------------------------------------------


class Runner:
    """Applies operations to one worker and records each connection (see module docstring)."""

    def __init__(self, s: Scenario, w: Driver, run: Run, invoke_after_each: bool = False):
        self.s, self.w, self.run = s, w, run
        self.eng = s.engine
        self.live = Live()
        self.handles: dict[str, RegisteredTrigger] = {}
        self.current: ConnRecord | None = None
        self.invoke_after_each = invoke_after_each

    # -- connections --

    def _conn(self) -> Connection:
        assert self.current is not None
        return self.eng.connection(self.current.id)

    def _owns_live(self, c: Connection) -> bool:
        reg = self.eng.registry
        fns = {f.id for f in reg.functions_of(c.id)}
        types = {t.id for t in reg.trigger_types.values() if t.owner == c.id}
        paths = {
            (t.config or {}).get("api_path")
            for t in reg.triggers_of(c.id)
            if isinstance(t.config, dict)
        }
        want_paths = {trigger_config(n)["api_path"] for n in self.live.triggers}
        return self.live.functions <= fns and self.live.types <= types and want_paths <= paths

    def _has_metadata(self, c: Connection) -> bool:
        return any(is_metadata(m) for m in self.eng.transcript.messages(conn=c.id, direction=IN))

    async def _next_connection(self, after: int) -> Connection:
        def newer() -> Connection | None:
            for cid in self.eng.transcript.connections():
                if cid > after and cid in self.eng.connections:
                    return self.eng.connections[cid]
            return None

        return await self.eng.wait_until(newer, REPLAY_WAIT_S, f"a connection after #{after}")

    async def _probe(self, c: Connection) -> bool:
        """An invoke of an unknown function; its answer proves the SDK read all earlier frames."""
        inv = str(uuid.uuid4())
        since = len(self.eng.transcript.events)
        self.eng.send(
            c, {"type": "invokefunction", "invocation_id": inv, "function_id": PROBE_FN, "data": {}}
        )
        try:
            await self.eng.transcript.wait_frame(
                "invocationresult",
                conn=c.id,
                since=since,
                timeout=PROBE_WAIT_S,
                where=lambda m: m.get("invocation_id") == inv,
            )
            return True
        except WaitTimeout:
            return False

    async def open(
        self, cause: str, identities: list[tuple[str, str]], after: int, t_drop: int | None
    ) -> ConnRecord | None:
        """Wait for the next connection and its full replay; record it."""
        try:
            c = await self._next_connection(after)
        except WaitTimeout:
            self.run.problems.append(f"no reconnection within {REPLAY_WAIT_S}s after {cause}")
            self.current = None
            return None
        rec = ConnRecord(c.id, cause, self.live.copy(), identities, c.worker_id, c.reattach_token)
        rec.epoch = c.epoch
        if t_drop is not None:
            dials = [t for t in self.eng.transcript.dial_times() if t > t_drop]
            rec.dial_gap_ms = round((dials[0] - t_drop) / 1e6, 1) if dials else None
        self.run.conns.append(rec)
        self.current = rec
        try:
            await self.eng.wait_until(
                lambda: c.alive and self._owns_live(c) and self._has_metadata(c),
                REPLAY_WAIT_S,
                f"connection #{c.id} to re-register {sorted(self.live.keys())} and send metadata",
            )
        except WaitTimeout as exc:
            rec.problem = str(exc).splitlines()[0]
            self.run.problems.append(rec.problem)
            return rec
        rec.completed = await self._probe(c)
        if not rec.completed:
            rec.problem = f"connection #{c.id}: no answer to the probe within {PROBE_WAIT_S}s"
            self.run.problems.append(rec.problem)
        rec.replay_frames = len(self.eng.transcript.frames(conn=c.id, direction=IN)) - 1
        if self.invoke_after_each:
            await self.invoke_all(rec)
        return rec

    def identities_after(self, rec: ConnRecord) -> list[tuple[str, str]]:
        """What the next reattach may name: this connection's identity once the SDK provably
        read it; before that, also the identities it may still hold."""
        own = (rec.worker_id, rec.token)
        return [own] if rec.completed else [*rec.identities, own]

    # -- operations --

    async def apply(self, op: Op) -> None:
        kind = op[0]
        if kind in ("drop", "restart", "mid_drop"):
            await self.disconnect(op)
            return
        assert self.current is not None
        if self.current.problem is not None and not self.current.completed:
            return  # the connection never settled; later ops would only blur the verdicts
        c = self._conn()
        try:
            await getattr(self, f"op_{kind}")(c, *op[1:])
        except WaitTimeout as exc:
            self.run.problems.append(f"{op}: {str(exc).splitlines()[0]}")

    # Each operation waits for its own frame on the current connection (not for an engine
    # state that may already hold, e.g. a trigger type the engine never forgot), so the next
    # operation, a drop above all, cannot overtake it.

    def _mark(self) -> int:
        return len(self.eng.transcript.events)

    async def _sent(self, c: Connection, since: int, kind: str, key: str, what: str) -> Any:
        """The first inbound frame of type ``kind`` on ``c`` after ``since`` that names ``key``
        (undecodable frames, e.g. ``unregistertriggertype`` for engine 0.23, match on text)."""

        def match(e: Any) -> bool:
            if e.kind != FRAME or e.direction != IN or e.conn != c.id:
                return False
            if e.message is not None:
                m = e.message
                names = (m.get("id"), (m.get("config") or {}).get("api_path"))
                return m.get("type") == kind and key in names
            return f'"{kind}"' in (e.raw or "") and key in (e.raw or "")

        return await self.eng.transcript.wait_for(match, OP_WAIT_S, what, since=since)

    async def op_reg(self, c: Connection, fid: str) -> None:
        since = self._mark()
        await self.w.register_function(fid, "echo")
        self.live.functions.add(fid)
        self.run.ever_functions.add(fid)
        self.current.registered[("fn", fid)] += 1  # type: ignore[union-attr]
        await self._sent(c, since, "registerfunction", fid, f"registerfunction {fid}")

    async def op_unreg(self, c: Connection, fid: str) -> None:
        since = self._mark()
        await self.w.unregister_function(fid)
        self.live.functions.discard(fid)
        await self._sent(c, since, "unregisterfunction", fid, f"unregisterfunction {fid}")

    async def op_regtype(self, c: Connection, tid: str) -> None:
        since = self._mark()
        await self.w.register_trigger_type(tid, f"replay type {tid}")
        self.live.types.add(tid)
        self.current.registered[("type", tid)] += 1  # type: ignore[union-attr]
        await self._sent(c, since, "registertriggertype", tid, f"registertriggertype {tid}")

    async def op_unregtype(self, c: Connection, tid: str) -> None:
        since = self._mark()
        await self.w.unregister_trigger_type(tid)
        self.live.types.discard(tid)
        # Engine 0.23 does not know `unregistertriggertype` (iii-protocol.md §2): it logs the
        # frame as undecodable and keeps the type until the connection goes.
        await self._sent(c, since, "unregistertriggertype", tid, f"unregistertriggertype {tid}")

    async def op_trig(self, c: Connection, name: str, fid: str) -> None:
        since = self._mark()
        cfg = trigger_config(name)
        self.handles[name] = await self.w.register_trigger("http", fid, cfg)
        self.live.triggers[name] = fid
        self.run.trigger_fns[name] = fid
        self.current.registered[("trig", cfg["api_path"])] += 1  # type: ignore[union-attr]
        ev = await self._sent(c, since, "registertrigger", cfg["api_path"], f"trigger {name}")
        self.run.trigger_ids[name] = str(ev.message["id"])

    async def op_untrig(self, c: Connection, name: str) -> None:
        since = self._mark()
        await self.w.unregister_trigger(self.handles.pop(name))
        self.live.triggers.pop(name, None)
        tid = self.run.trigger_ids.get(name, "?")
        await self._sent(c, since, "unregistertrigger", tid, f"unregistertrigger {name}")

    async def disconnect(self, op: Op) -> None:
        prev = self.current
        assert prev is not None
        identities = self.identities_after(prev)
        c = self.eng.connection(prev.id)
        if op[0] == "restart":
            t_drop = time.monotonic_ns()
            await self.eng.restart()
            await self.open("restart", identities, prev.id, t_drop)
            return
        if op[0] == "drop":
            mode = op[1]
            t_drop = time.monotonic_ns()
            if mode.startswith("close"):
                self.eng.drop(c, "close", int(mode[5:]), "conformance replay drop")
            else:
                self.eng.drop(c, mode)
            await self.open(mode, identities, prev.id, t_drop)
            return
        await self.mid_replay_drop(c, identities, int(op[1]))

    async def mid_replay_drop(self, c: Connection, identities: list[Any], k: int) -> None:
        """Drop, then abort the reconnection when its frame number (k mod n) + 1 arrives, where
        n = registrations + 1: every SDK that replays sends at least the registrations and the
        metadata call, so the cut lands inside the replay whether or not a reattach leads it."""
        n = 1 + len(self.live.keys())
        after = k % n
        self.eng.drop(c, "abort")
        await self.eng.wait_until(lambda: not c.alive, OP_WAIT_S, f"connection #{c.id} down")
        rule = self.eng.add_frame_rule(FrameRule(action="abort", direction="in", after=after))
        cut: Connection | None = None
        try:
            cut = await self._next_connection(c.id)
            conn = cut
            # Either the cut, or (an SDK sending fewer frames) a replay that completed uncut.
            await self.eng.wait_until(
                lambda: (
                    (rule.fired and not conn.alive)
                    or (not rule.fired and self._owns_live(conn) and self._has_metadata(conn))
                ),
                REPLAY_WAIT_S,
                "the mid-replay cut",
            )
        except WaitTimeout as exc:
            self.run.problems.append(f"mid_drop: {str(exc).splitlines()[0]}")
        finally:
            with contextlib.suppress(ValueError):
                self.eng.frame_rules.remove(rule)
        if cut is None or not rule.fired:
            # No cut (no reconnection, or fewer frames than a replay has): carry on with
            # whatever connection there is, as after a plain drop.
            self.run.problems.append(f"mid_drop: no cut after frame {after + 1}")
            await self.open("mid_drop_uncut", identities, c.id, None)
            return
        rec = ConnRecord(
            cut.id, "mid_drop", self.live.copy(), identities, cut.worker_id, cut.reattach_token
        )
        rec.aborted_mid_replay = True
        rec.epoch = cut.epoch
        rec.problem = f"aborted after inbound frame {after + 1} (by the check)"
        self.run.conns.append(rec)
        self.current = rec
        t_cut = time.monotonic_ns()
        await self.open("after_mid_drop", self.identities_after(rec), cut.id, t_cut)

    async def invoke_all(self, rec: ConnRecord) -> None:
        """Every live function answers through the engine; every dead one is not found."""
        for fid in sorted(self.run.ever_functions):
            payload = {"conn": rec.id, "fid": fid}
            try:
                out = await self.eng.invoke(fid, payload, timeout=PROBE_WAIT_S)
                got: dict[str, Any] = {"ok": out.ok, "result": out.result, "error": out.error}
                got["routed"] = out.target is not None
            except WaitTimeout:
                got = {"ok": False, "error": {"code": "no answer"}, "routed": True}
            self.run.invocations.append(
                {"conn": rec.id, "fid": fid, "live": fid in self.live.functions, **got}
            )

    async def settle(self) -> None:
        """Let a late duplicate of the last replay arrive before frames are counted."""
        await asyncio.sleep(SETTLE_S)


async def run_ops(
    iii_sdk: Any, verdict: Any, ops: list[Op], *, invoke_after_each: bool = False
) -> Run:
    """One example: a fresh engine and worker, ``ops`` applied, every connection recorded."""
    verdict.set_example(ops)
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(reconnection=QUICK)
        run = Run(ops, s.engine, w.worker_name, *expected_identity(iii_sdk, w))
        runner = Runner(s, w, run, invoke_after_each)
        first = await runner.open("first", [], 0, None)
        assert first is not None, f"the worker never connected: {run.problems}"
        for op in ops:
            await runner.apply(op)
            if runner.current is None or (
                not runner.current.completed and not runner.current.aborted_mid_replay
            ):
                break  # no connection to continue on
        await runner.settle()
        verdict.evidence(ops=[list(o) for o in ops], connections=run.summary())
        if run.problems:
            verdict.evidence(problems=run.problems)
        return run


def expected_identity(iii_sdk: Any, w: Driver) -> tuple[str | None, str | None]:
    """(runtime, version) the metadata call must carry: the installed SDK's; for a custom
    driver the language its ``ready`` event names, and any non-empty version."""
    if iii_sdk.spec.language in ("python", "node"):
        return iii_sdk.spec.language, iii_sdk.sdk_version
    return ((w.ready or {}).get("sdk") or {}).get("language"), None


# --- the properties ------------------------------------------------------------------------------


def replay_counts(run: Run, rec: ConnRecord) -> Counter[tuple[str, str]]:
    """How often each registration was sent on ``rec`` minus the ones operations caused."""
    seen: Counter[tuple[str, str]] = Counter()
    for m in run.inbound(rec):
        k = key_of(m)
        if k is not None:
            seen[k] += 1
    seen.subtract(rec.registered)
    return seen


def reattach_violations(run: Run, *, required: bool = True) -> list[str]:
    """Reconnections whose first frame is not a reattach naming an identity the SDK may hold;
    with ``required=False`` only the identity a reattach names is judged."""
    bad = []
    names = {(c.worker_id, c.token): c.id for c in run.conns}
    for rec in run.reconnections():
        msgs = run.inbound(rec)
        if not msgs:
            if rec.completed and required:
                bad.append(f"connection #{rec.id} ({rec.cause}) sent no frame")
            continue
        first = msgs[0]
        if first.get("type") != "reattach":
            if not required:
                continue
            bad.append(
                f"connection #{rec.id} ({rec.cause}): first frame was {_describe(first)}, "
                "not reattach"
            )
            continue
        pair = (first.get("previous_worker_id"), first.get("reattach_token"))
        if pair not in rec.identities:
            named = names.get(pair)  # type: ignore[arg-type]
            what = (
                f"the identity of connection #{named}"
                if named
                else "an identity the engine never sent (or a mismatched id/token pair)"
            )
            want = [names.get(i) for i in rec.identities]
            bad.append(
                f"connection #{rec.id} ({rec.cause}): reattach named {what}; the last "
                f"workerregistered the SDK provably processed was connection {want}'s"
            )
        n = sum(1 for m in msgs if m.get("type") == "reattach")
        if n != 1:
            bad.append(f"connection #{rec.id}: {n} reattach frames")
    return bad


def once_violations(run: Run) -> list[str]:
    bad = []
    for rec in run.conns[1:]:
        counts = replay_counts(run, rec)
        for k in sorted(rec.live.keys()):
            n = counts.get(k, 0)
            if rec.completed and n != 1:
                bad.append(f"connection #{rec.id} ({rec.cause}): {k[0]} {k[1]} replayed {n} times")
            elif rec.aborted_mid_replay and n > 1:
                bad.append(f"connection #{rec.id} (cut mid-replay): {k[0]} {k[1]} sent {n} times")
    return bad


def order_deviations(run: Run) -> list[str]:
    """iii-protocol.md §11.3: trigger types < functions < triggers within a replay."""
    out = []
    for rec in run.reconnections():
        if not rec.completed:
            continue
        window = run.inbound(rec)[: rec.replay_frames]
        kinds = [k[0] for k in map(key_of, window) if k is not None]
        ranks = [_ORDER[k] for k in kinds]
        if ranks != sorted(ranks):
            out.append(f"connection #{rec.id}: replay order {kinds}")
    return out


def stale_violations(run: Run) -> list[str]:
    bad = []
    for rec in run.reconnections():
        live = rec.live.keys()
        for k, n in sorted(replay_counts(run, rec).items()):
            if k not in live and n > 0:
                bad.append(
                    f"connection #{rec.id} ({rec.cause}): replayed {k[0]} {k[1]} "
                    f"({n}x), unregistered before the drop"
                )
    return bad


def trigger_id_violations(run: Run) -> list[str]:
    bad = []
    by_path = {trigger_config(n)["api_path"]: n for n in run.trigger_ids}
    for rec in run.conns:
        for m in run.inbound(rec):
            if m.get("type") != "registertrigger":
                continue
            cfg = m.get("config")
            name = by_path.get(cfg.get("api_path")) if isinstance(cfg, dict) else None
            if name is None:
                continue
            want = {
                "id": run.trigger_ids[name],
                "trigger_type": "http",
                "function_id": run.trigger_fns[name],
                "config": trigger_config(name),
            }
            got = {k: m.get(k) for k in want}
            if got != want:
                bad.append(f"connection #{rec.id}: trigger {name} sent as {got}, first as {want}")
    return bad


def metadata_findings(run: Run) -> tuple[list[str], dict[int, int]]:
    """Violations about ``engine::workers::register`` per completed connection, and how many
    calls each carried (Python sometimes flushes a queued copy from a connection cut before
    its own call went out, then sends the new one: two calls, both valid, race-dependent)."""
    bad, counts = [], {}
    for rec in run.conns:
        if not rec.completed:
            continue
        metas = [m for m in run.inbound(rec) if is_metadata(m)]
        counts[rec.id] = len(metas)
        if not metas:
            bad.append(f"connection #{rec.id} ({rec.cause}): no {META_FN} call")
        for m in metas:
            bad += [f"connection #{rec.id}: {p}" for p in metadata_problems(run, m)]
    return bad, counts


def metadata_problems(run: Run, m: dict[str, Any]) -> list[str]:
    probs = []
    if m.get("action") != {"type": "void"}:
        probs.append(f"metadata call is not void: action={m.get('action')!r}")
    if "invocation_id" in m:
        probs.append(f"metadata call carries invocation_id={m['invocation_id']!r}")
    data = m.get("data") if isinstance(m.get("data"), dict) else {}
    want = {"runtime": run.language, "version": run.version, "name": run.worker_name}
    for k, v in want.items():
        if v is not None and data.get(k) != v:
            probs.append(f"metadata {k}={data.get(k)!r}, expected {v!r}")
        elif not isinstance(data.get(k), str) or not data[k].strip():
            probs.append(f"metadata {k}={data.get(k)!r}, expected a non-empty string")
    if not isinstance(data.get("os"), str) or not data["os"].strip():
        probs.append(f"metadata os={data.get('os')!r}, expected platform + arch")
    return probs


def invocation_violations(run: Run) -> list[str]:
    bad = []
    for inv in run.invocations:
        where = f"after connection #{inv['conn']}"
        if inv["live"]:
            want = {"conn": inv["conn"], "fid": inv["fid"]}
            if not inv["ok"] or inv["result"] != want:
                bad.append(f"{where}: live {inv['fid']} answered {inv['error'] or inv['result']}")
        else:
            code = (inv["error"] or {}).get("code")
            if code != "function_not_found" or inv["routed"]:
                how = "routed to the worker" if inv["routed"] else "answered"
                bad.append(f"{where}: unregistered {inv['fid']} was {how}: {inv}")
    return bad


def _fail(what: str, violations: list[str]) -> str:
    return f"{what}:\n  " + "\n  ".join(violations[:12])


# --- checks --------------------------------------------------------------------------------------

GENERAL = replay_ops(mid_replay=True)


@check(
    "replay.no_reattach_first",
    title="No reattach on the first connection",
    contract="iii-protocol.md#11.1 (no `reattach` on the first connection)",
)
async def test_no_reattach_first(iii_sdk: Any, verdict: Any) -> None:
    # Registrations made right after connect: Node replays them from its maps when the socket
    # opens, Python sends them live; either way the first connection has no identity to name.
    ops: list[Op] = [("reg", "rp::f0"), ("trig", "t1", "rp::f0"), ("drop", "close1000")]
    run = await run_ops(iii_sdk, verdict, ops)
    first = run.conns[0]
    msgs = run.inbound(first)
    verdict.evidence(first_connection_frames=[_describe(m) for m in msgs])
    reattach = [m for m in msgs if m.get("type") == "reattach"]
    assert not reattach, (
        f"the SDK sent {reattach} on its first connection; the contract has no identity to "
        "reattach to before any workerregistered"
    )


@check(
    "replay.reattach_first",
    title="Every reconnection starts with reattach naming the last processed identity",
    contract="iii-protocol.md#11.1 (reattach first, carrying the last processed workerregistered)",
)
@examples(gate=2, nightly=25)
@given(ops=GENERAL)
async def test_reattach_first(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops)
    bad = reattach_violations(run)
    assert not bad, _fail("reconnections without a correct leading reattach", bad)
    assert not [p for p in run.problems if "no reconnection" in p], run.problems


@check(
    "replay.registrations_once",
    title="Each live function, trigger type and trigger is replayed exactly once",
    contract=f'{CONTRACT} ("On reconnect, the SDK re-registers everything automatically"); '
    "iii-protocol.md#11.2-11.3",
)
@examples(gate=2, nightly=25)
@given(ops=replay_ops(mid_replay=True, require=("trig", "regtype")))
async def test_registrations_once(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops)
    bad = once_violations(run)
    incomplete = [c for c in run.reconnections() if not c.completed and not c.aborted_mid_replay]
    assert not bad, _fail("live registrations not replayed exactly once", bad)
    assert not incomplete, _fail(
        "reconnections that never re-registered everything", [str(c.problem) for c in incomplete]
    )
    order = order_deviations(run)
    if order:
        verdict.non_strict(
            "replay order differs from trigger types < functions < triggers (iii-protocol §11.3)",
            order=order,
        )


@check(
    "replay.trigger_ids_stable",
    title="A replayed trigger keeps its id, type, function and config",
    contract="iii-protocol.md#11.4 (trigger ids are stable across reconnects)",
)
@examples(gate=2, nightly=25)
@given(ops=replay_ops(mid_replay=True, require=("trig",)))
async def test_trigger_ids_stable(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops)
    verdict.evidence(trigger_ids=run.trigger_ids)
    bad = trigger_id_violations(run)
    assert not bad, _fail("triggers replayed with a different identity", bad)


@check(
    "replay.nothing_unregistered",
    title="Nothing unregistered is replayed",
    contract=f"{CONTRACT} (re-registers everything registered, i.e. nothing unregistered)",
)
@examples(gate=2, nightly=25)
@given(ops=replay_ops(mid_replay=True, require=("unreg", "untrig", "unregtype")))
async def test_nothing_unregistered(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops)
    bad = stale_violations(run)
    assert not bad, _fail("unregistered items replayed", bad)


@check(
    "replay.metadata_every_connection",
    title="engine::workers::register (void, documented fields) on every connection",
    contract=f'{CONTRACT} ("When a Worker connects, the SDK sends its metadata"); '
    "iii-protocol.md#11.5",
)
@examples(gate=1, nightly=25)
@given(ops=GENERAL)
async def test_metadata_every_connection(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops)
    bad, counts = metadata_findings(run)
    verdict.evidence(metadata_calls_per_connection=counts)
    assert not bad, _fail("connections without a well-formed metadata call", bad)


@check(
    "replay.invocable_after",
    title="After every reconnection live functions answer and unregistered ones are not found",
    contract=f"{CONTRACT} (the engine routes invocations to the re-registered worker)",
)
@examples(gate=1, nightly=25)
@given(ops=replay_ops(mid_replay=True, require=("unreg",)))
async def test_invocable_after(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops, invoke_after_each=True)
    verdict.evidence(invocations=run.invocations[-12:])
    bad = invocation_violations(run)
    assert not bad, _fail("invocations after reconnection went wrong", bad)


def _then_drop(ops: list[Op]) -> list[Op]:
    """End with a plain drop after the last restart, so the post-restart identity is used."""
    last = max(i for i, op in enumerate(ops) if op[0] == "restart")
    if not any(op[0] == "drop" for op in ops[last + 1 :]):
        ops = [*ops, ("drop", "close1000")]
    return ops


@check(
    "replay.engine_restart",
    title="After an engine restart: stale reattach ignored, everything re-registered, "
    "new identity used afterwards",
    contract=f"{CONTRACT}; iii-protocol.md#3.4 and #11.1-11.2",
)
@examples(gate=1, nightly=15)
@given(ops=replay_ops(require=("restart",)).map(_then_drop))
async def test_engine_restart(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops)
    after = [c for c in run.conns if c.cause == "restart"]
    assert after, f"no connection after the engine restart: {run.problems}"
    ignored = run.engine.transcript.notes("reattach_ignored")
    verdict.evidence(reattach_ignored=[e.detail for e in ignored])
    bad = [
        f"connection #{rec.id} after the restart did not re-register everything: {rec.problem}"
        for rec in after
        if not rec.completed
    ]
    # Whether a reattach is sent at all is replay.reattach_first's; here only which identity
    # it names: the stale one right after the restart, the new engine's one afterwards.
    bad += reattach_violations(run, required=False)
    assert not bad, _fail("replay across an engine restart went wrong", bad)
    later = [c for c in run.reconnections() if c.epoch > 0 and c.cause != "restart"]
    assert later, "no reconnection after the restart's connection (the example ends too early)"


@check(
    "replay.mid_replay_drop",
    title="A connection cut in the middle of a replay is followed by a full replay",
    contract=f"{CONTRACT}; iii-protocol.md#11.1-11.2",
)
@examples(gate=2, nightly=25)
@given(ops=replay_ops(restart=False, mid_replay=True, require=("mid_drop",)))
async def test_mid_replay_drop(iii_sdk: Any, verdict: Any, ops: list[Op]) -> None:
    run = await run_ops(iii_sdk, verdict, ops)
    cuts = [c for c in run.conns if c.aborted_mid_replay]
    assert cuts, f"no replay was cut: {run.problems}"
    verdict.evidence(dial_gaps_ms=[(c.id, c.cause, c.dial_gap_ms) for c in run.conns])
    bad = []
    for cut in cuts:
        nxt = [c for c in run.conns if c.id > cut.id][:1]
        if not nxt or not nxt[0].completed:
            bad.append(f"after the cut of connection #{cut.id}: {run.problems}")
    # Which identity the reattach names after a cut is graded by replay.reattach_first.
    bad += once_violations(run) + stale_violations(run)
    assert not bad, _fail("replay after a mid-replay drop went wrong", bad)


@check(
    "replay.normal_close",
    title="An engine close with 1000 or 1001 is followed by a reconnection",
    contract="iii-protocol.md#11.13 (normal close triggers a reconnect; iii-hq/iii#2180); "
    "seed-external-workers.md#Reconnection Config",
)
@examples(gate=1, nightly=6)
@given(first=st.sampled_from(["close1000", "close1001"]))
async def test_normal_close(iii_sdk: Any, verdict: Any, first: str) -> None:
    second = "close1001" if first == "close1000" else "close1000"
    verdict.set_example([first, second])
    async with scenario(iii_sdk, verdict) as s:
        w = await s.worker(reconnection=QUICK, functions={"rp::f0": "echo"})
        run = Run([], s.engine, w.worker_name, *expected_identity(iii_sdk, w))
        runner = Runner(s, w, run)
        runner.live.functions.add("rp::f0")
        rec = await runner.open("first", [], 0, None)
        gaps: dict[str, float | None] = {}
        for mode in (first, second):
            assert rec is not None
            code = int(mode[5:])
            t0 = time.monotonic_ns()
            s.engine.drop(s.engine.connection(rec.id), "close", code, "conformance normal close")
            # Whether the replay is complete is other checks' business: any new connection
            # counts, and the next close waits for it to settle (bounded) before it is sent.
            rec = await runner.open(mode, runner.identities_after(rec), rec.id, t0)
            gaps[mode] = rec.dial_gap_ms if rec else None
            verdict.evidence(close_to_redial_ms=gaps, connections=run.summary())
            assert rec is not None, (
                f"after the engine's close {code} the SDK did not reconnect within "
                f"{REPLAY_WAIT_S}s (first retry due after {QUICK['initial_delay_ms']} ms); "
                "a normal close must trigger a reconnect like any other disconnect"
            )
