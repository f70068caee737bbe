"""What is registered, by whom: functions, trigger types, triggers and services, per namespace.

Ownership follows the engine's lease rules (iii-protocol.md §8.2): an id held by another live
connection is a conflict; releasing on disconnect only removes entries the connection still owns,
so a successor that already re-claimed an id keeps it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_NS = "default"


@dataclass
class FunctionEntry:
    id: str
    namespace: str
    owner: int
    description: str | None = None
    metadata: Any = None
    request_format: Any = None
    response_format: Any = None
    registered_ns: int = field(default_factory=time.monotonic_ns)


@dataclass
class TriggerTypeEntry:
    id: str
    namespace: str
    owner: int | None  # None: built into the engine
    description: str = ""


@dataclass
class TriggerEntry:
    id: str
    trigger_type: str
    function_id: str
    config: Any
    owner: int
    namespace: str = DEFAULT_NS
    trigger_namespace: str = DEFAULT_NS
    metadata: Any = None
    status: str = "parked"  # "active" once its type exists

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger_type": self.trigger_type,
            "function_id": self.function_id,
            "config": self.config,
            "namespace": self.namespace,
            "trigger_namespace": self.trigger_namespace,
            "metadata": self.metadata,
            "status": self.status,
        }


class Registry:
    def __init__(self, builtin_trigger_types: tuple[str, ...] = ()):
        self.functions: dict[tuple[str, str], FunctionEntry] = {}
        self.trigger_types: dict[tuple[str, str], TriggerTypeEntry] = {}
        self.triggers: dict[str, TriggerEntry] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        for tt in builtin_trigger_types:
            self.trigger_types[(DEFAULT_NS, tt)] = TriggerTypeEntry(tt, DEFAULT_NS, None, "builtin")

    # -- functions ---------------------------------------------------------------------------

    def claim_function(self, entry: FunctionEntry, is_live: Any) -> FunctionEntry | None:
        """Register ``entry``; return the conflicting entry if another live connection owns it."""
        key = (entry.namespace, entry.id)
        current = self.functions.get(key)
        if current is not None and current.owner != entry.owner and is_live(current.owner):
            return current
        self.functions[key] = entry
        prefix = entry.id.split("::")[0] if "::" in entry.id else entry.id
        self.services.setdefault((entry.namespace, prefix), {"id": prefix, "implicit": True})
        return None

    def release_function(self, namespace: str, fid: str, owner: int) -> bool:
        key = (namespace, fid)
        entry = self.functions.get(key)
        if entry is not None and entry.owner == owner:
            del self.functions[key]
            return True
        return False

    def resolve(self, namespace: str, fid: str) -> FunctionEntry | None:
        return self.functions.get((namespace, fid))

    def namespaces_of(self, fid: str) -> list[str]:
        return sorted(ns for ns, i in self.functions if i == fid)

    def functions_of(self, owner: int) -> list[FunctionEntry]:
        return [f for f in self.functions.values() if f.owner == owner]

    # -- triggers ----------------------------------------------------------------------------

    def trigger_type(self, namespace: str, tid: str) -> TriggerTypeEntry | None:
        return self.trigger_types.get((namespace, tid)) or self.trigger_types.get((DEFAULT_NS, tid))

    def triggers_of(self, owner: int) -> list[TriggerEntry]:
        return [t for t in self.triggers.values() if t.owner == owner]

    def triggers_for_type(self, tid: str) -> list[TriggerEntry]:
        return [t for t in self.triggers.values() if t.trigger_type == tid]

    # -- disconnect --------------------------------------------------------------------------

    def release_connection(self, owner: int) -> dict[str, list[str]]:
        """Remove everything ``owner`` still owns; return what was removed, for the transcript."""
        removed_fns = [f.id for f in self.functions_of(owner)]
        for f in self.functions_of(owner):
            del self.functions[(f.namespace, f.id)]
        removed_trg = [t.id for t in self.triggers_of(owner)]
        for tid in removed_trg:
            del self.triggers[tid]
        removed_types = [k for k, v in self.trigger_types.items() if v.owner == owner]
        for k in removed_types:
            del self.trigger_types[k]
            for t in self.triggers_for_type(k[1]):
                t.status = "parked"  # bindings wait for a new provider
        return {
            "functions": removed_fns,
            "triggers": removed_trg,
            "trigger_types": [k[1] for k in removed_types],
        }
