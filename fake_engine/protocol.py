"""The iii worker/engine message catalogue as typed models (sans-I/O).

Faithful to engine 0.23 (`engine/src/protocol.rs`, see iii-protocol.md §2): internally tagged by a
lowercase ``type``; unknown fields are tolerated and kept in ``extra``; a frame that is not JSON,
names an unknown ``type`` or lacks a required field is a :class:`DecodeError`, which the engine
records and drops without closing the connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

JSON = Any

# Binary frames whose first four bytes are one of these carry telemetry (OTLP JSON after the prefix).
TELEMETRY_PREFIXES = (b"OTLP", b"MTRC", b"LOGS")


class DecodeError(ValueError):
    """A frame the engine cannot decode; it is logged and dropped (engine `json decode error`)."""


_MISSING = object()


@dataclass
class Message:
    """Base of every protocol message. ``extra`` keeps fields the model does not know."""

    TYPE: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    extra: dict[str, JSON] = field(default_factory=dict, kw_only=True, repr=False)

    def to_wire(self) -> dict[str, JSON]:
        """The JSON object sent on the wire; ``None`` fields are omitted like serde's skip."""
        out: dict[str, JSON] = {"type": self.TYPE}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is not None or f.name in self.REQUIRED:
                out[f.name] = value
        out.update(self.extra)
        return out

    def encode(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"))


@dataclass
class RegisterFunction(Message):
    TYPE = "registerfunction"
    REQUIRED = ("id",)
    id: str = ""
    description: str | None = None
    request_format: JSON = None
    response_format: JSON = None
    metadata: JSON = None
    invocation: JSON = None


@dataclass
class UnregisterFunction(Message):
    TYPE = "unregisterfunction"
    REQUIRED = ("id",)
    id: str = ""


@dataclass
class RegisterTriggerType(Message):
    TYPE = "registertriggertype"
    REQUIRED = ("id", "description")
    id: str = ""
    description: str = ""
    trigger_request_format: JSON = None
    call_request_format: JSON = None
    namespace: str | None = None


@dataclass
class UnregisterTriggerType(Message):
    """Sent by the Node, Python and Rust SDKs but not a variant of engine 0.23.

    The real engine drops it as a decode error; the fake does the same unless
    ``EngineConfig.accept_unregistertriggertype`` is set, so the difference stays visible.
    """

    TYPE = "unregistertriggertype"
    REQUIRED = ("id",)
    id: str = ""
    namespace: str | None = None


@dataclass
class RegisterTrigger(Message):
    TYPE = "registertrigger"
    REQUIRED = ("id", "trigger_type", "function_id", "config")
    id: str = ""
    trigger_type: str = ""
    function_id: str = ""
    config: JSON = None
    metadata: JSON = None
    namespace: str | None = None
    trigger_namespace: str | None = None


@dataclass
class UnregisterTrigger(Message):
    TYPE = "unregistertrigger"
    REQUIRED = ("id",)
    id: str = ""
    trigger_type: str | None = None


@dataclass
class TriggerRegistrationResult(Message):
    TYPE = "triggerregistrationresult"
    REQUIRED = ("id", "trigger_type", "function_id")
    id: str = ""
    trigger_type: str = ""
    function_id: str = ""
    error: JSON = None


@dataclass
class InvokeFunction(Message):
    TYPE = "invokefunction"
    REQUIRED = ("function_id", "data")
    function_id: str = ""
    data: JSON = None
    invocation_id: str | None = None
    traceparent: str | None = None
    baggage: str | None = None
    action: JSON = None
    metadata: JSON = None
    namespace: str | None = None

    @property
    def is_void(self) -> bool:
        return isinstance(self.action, dict) and self.action.get("type") == "void"


@dataclass
class InvocationResult(Message):
    TYPE = "invocationresult"
    REQUIRED = ("invocation_id", "function_id")
    invocation_id: str = ""
    function_id: str = ""
    result: JSON = None
    error: JSON = None
    traceparent: str | None = None
    baggage: str | None = None


@dataclass
class RegisterService(Message):
    TYPE = "registerservice"
    REQUIRED = ("id",)
    id: str = ""
    name: str | None = None
    description: str | None = None
    parent_service_id: str | None = None


@dataclass
class Ping(Message):
    TYPE = "ping"


@dataclass
class Pong(Message):
    TYPE = "pong"


@dataclass
class Reattach(Message):
    TYPE = "reattach"
    REQUIRED = ("previous_worker_id",)
    previous_worker_id: str = ""
    reattach_token: str | None = None


@dataclass
class WorkerRegistered(Message):
    TYPE = "workerregistered"
    REQUIRED = ("worker_id",)
    worker_id: str = ""
    reattach_token: str | None = None
    features: list[str] | None = None


@dataclass
class RegistrationRejected(Message):
    TYPE = "registrationrejected"
    REQUIRED = ("code", "namespace", "owner_worker_id")
    code: str = ""
    namespace: str = ""
    owner_worker_id: str = ""
    worker_name: str | None = None
    function_id: str | None = None


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        RegisterFunction,
        UnregisterFunction,
        RegisterTriggerType,
        UnregisterTriggerType,
        RegisterTrigger,
        UnregisterTrigger,
        TriggerRegistrationResult,
        InvokeFunction,
        InvocationResult,
        RegisterService,
        Ping,
        Pong,
        Reattach,
        WorkerRegistered,
        RegistrationRejected,
    )
}

# What engine 0.23 accepts from a worker (UnregisterTriggerType is not among them).
ENGINE_INBOUND = frozenset(MESSAGE_TYPES) - {
    "unregistertriggertype",
    "workerregistered",
    "registrationrejected",
}


def from_object(obj: JSON, *, allowed: frozenset[str] | None = None) -> Message:
    """Build a typed message from a decoded JSON object, or raise :class:`DecodeError`."""
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise DecodeError("missing field `type`")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None or (allowed is not None and kind not in allowed):
        raise DecodeError(f"unknown variant `{kind}`")
    known = _known_fields(cls)
    for name in cls.REQUIRED:
        # serde: a required JSON value may be `null` only for `JSON` fields (data, config).
        if name not in obj:
            raise DecodeError(f"missing field `{name}` in `{kind}`")
    kwargs = {k: v for k, v in obj.items() if k in known}
    extra = {k: v for k, v in obj.items() if k not in known and k != "type"}
    for name in cls.REQUIRED:
        expected_str = name not in ("data", "config")
        if expected_str and not isinstance(kwargs[name], str):
            raise DecodeError(f"invalid type for `{name}` in `{kind}`: expected a string")
    return cls(**kwargs, extra=extra)


def decode_json(payload: str | bytes) -> JSON:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None


def decode(payload: str | bytes, *, allowed: frozenset[str] | None = ENGINE_INBOUND) -> Message:
    """Decode one frame as the engine does; raises :class:`DecodeError`."""
    return from_object(decode_json(payload), allowed=allowed)


_KNOWN: dict[type[Message], frozenset[str]] = {}


def _known_fields(cls: type[Message]) -> frozenset[str]:
    known = _KNOWN.get(cls)
    if known is None:
        known = _KNOWN[cls] = frozenset(f.name for f in fields(cls)) - {"extra"}
    return known


def error_body(code: str, message: str, stacktrace: str | None = None) -> dict[str, str]:
    body = {"code": code, "message": message}
    if stacktrace is not None:
        body["stacktrace"] = stacktrace
    return body
