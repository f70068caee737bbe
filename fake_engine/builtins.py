"""Engine-owned functions (``engine::*``) with the real engine's result shapes (iii-protocol.md §4).

Each builtin takes the engine, the calling connection (None for the scripting API) and the call's
data, and returns ``(result, error)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .protocol import error_body
from .registry import DEFAULT_NS

if TYPE_CHECKING:
    from .engine import Connection, FakeEngine

Result = tuple[Any, dict[str, str] | None]
Builtin = Callable[["FakeEngine", "Connection | None", Any], Result]


def _data(data: Any) -> dict[str, Any]:
    return data if isinstance(data, dict) else {}


def workers_register(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    if conn is None:
        return None, error_body("invalid_caller", "engine::workers::register needs a worker")
    return engine._register_worker_metadata(conn, _data(data))


def _worker_json(engine: FakeEngine, conn: Connection) -> dict[str, Any]:
    md = conn.metadata or {}
    return {
        "id": conn.worker_id,
        "name": md.get("name"),
        "description": md.get("description"),
        "version": md.get("version"),
        "namespace": conn.namespace or DEFAULT_NS,
        "runtime": md.get("runtime"),
        "os": md.get("os"),
        "status": "busy" if conn.running else ("available" if conn.metadata else "connected"),
        "function_count": len(engine.registry.functions_of(conn.id)),
        "connected_at_ms": conn.connected_at_ms,
        "active_invocations": len(conn.running),
        "isolation": md.get("isolation"),
        "ip_address": conn.peer,
    }


def workers_list(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    d = _data(data)
    out = []
    for c in engine.live_connections():
        # The engine hides WS workers whose metadata has no pid.
        if not c.metadata or "pid" not in c.metadata:
            continue
        w = _worker_json(engine, c)
        if d.get("runtime") and w["runtime"] != d["runtime"]:
            continue
        if d.get("status") and w["status"] != d["status"]:
            continue
        if d.get("search") and d["search"] not in (w["name"] or ""):
            continue
        out.append(w)
    return {"workers": out}, None


def _function_json(engine: FakeEngine, f: Any) -> dict[str, Any]:
    owner = engine.connections.get(f.owner)
    out = {
        "function_id": f.id,
        "namespace": f.namespace,
        "worker_name": (owner.metadata or {}).get("name") if owner else None,
    }
    if f.description is not None:
        out["description"] = f.description
    if f.metadata is not None:
        out["metadata"] = f.metadata
    return out


def workers_info(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    d = _data(data)
    name = d.get("name")
    for c in engine.live_connections():
        if c.metadata and c.metadata.get("name") == name:
            w = _worker_json(engine, c)
            w.update({"pid": c.metadata.get("pid"), "internal": False})
            return {
                "worker": w,
                "functions": [
                    _function_json(engine, f) for f in engine.registry.functions_of(c.id)
                ],
                "trigger_types": [
                    {"id": t.id, "namespace": t.namespace, "description": t.description}
                    for t in engine.registry.trigger_types.values()
                    if t.owner == c.id
                ],
                "registered_triggers": [t.to_json() for t in engine.registry.triggers_of(c.id)],
            }, None
    return None, error_body("worker_not_found", f"Worker {name} not found")


def _visible(fid: str, metadata: Any, include_internal: bool) -> bool:
    if include_internal:
        return True
    if fid.startswith("engine::") and not fid.startswith("engine::queue::"):
        return False
    return not (isinstance(metadata, dict) and metadata.get("internal") is True)


def functions_list(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    d = _data(data)
    inc = bool(d.get("include_internal"))
    workers = set(d.get("workers") or []) | ({d["worker"]} if d.get("worker") else set())
    out = []
    for f in engine.registry.functions.values():
        if not _visible(f.id, f.metadata, inc):
            continue
        fj = _function_json(engine, f)
        if d.get("search") and d["search"] not in f.id:
            continue
        if d.get("prefix") and not f.id.startswith(d["prefix"]):
            continue
        if workers and fj["worker_name"] not in workers:
            continue
        out.append(fj)
    if inc:
        out += [
            {"function_id": b, "namespace": DEFAULT_NS, "worker_name": "engine"}
            for b in sorted(BUILTINS)
        ]
    return {"functions": out}, None


def functions_info(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    d = _data(data)
    ns = d.get("namespace") or DEFAULT_NS
    if "function_ids" in d:
        ids = list(d["function_ids"] or [])[:32]
        found = [engine.registry.resolve(ns, i) for i in ids]
        return {"functions": [_function_json(engine, f) for f in found if f]}, None
    fid = d.get("function_id")
    f = engine.registry.resolve(ns, fid) if isinstance(fid, str) else None
    if f is None:
        return None, error_body("function_not_found", engine.not_found_message(str(fid), ns))
    return _function_json(engine, f), None


def triggers_list(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    return {
        "trigger_types": [
            {
                "id": t.id,
                "namespace": t.namespace,
                "description": t.description,
                "worker_id": engine.connections[t.owner].worker_id
                if t.owner in engine.connections
                else None,
            }
            for t in engine.registry.trigger_types.values()
        ]
    }, None


def registered_triggers_list(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    d = _data(data)
    out = [
        t.to_json()
        for t in engine.registry.triggers.values()
        if not d.get("trigger_type") or t.trigger_type == d["trigger_type"]
    ]
    return {"triggers": out}, None


def log(engine: FakeEngine, conn: Connection | None, data: Any) -> Result:
    return None, None


BUILTINS: dict[str, Builtin] = {
    "engine::workers::register": workers_register,
    "engine::workers::list": workers_list,
    "engine::workers::info": workers_info,
    "engine::functions::list": functions_list,
    "engine::functions::info": functions_info,
    "engine::triggers::list": triggers_list,
    "engine::registered-triggers::list": registered_triggers_list,
    **{f"engine::log::{lvl}": log for lvl in ("info", "warn", "error", "debug", "trace")},
}
