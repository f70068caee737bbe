"""Go ``encoding/json``-like decoding so bad bodies fail the way toxiproxy's do.

Go matches keys case-insensitively, ignores unknown keys, leaves a field untouched
on JSON ``null`` and rejects wrong types (including a float for an int field).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from .errors import BAD_REQUEST_BODY, ApiError

_MISSING = object()
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_body(raw: bytes) -> Any:
    """Parse a request body; an empty body is Go's ``EOF`` error."""
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        raise BAD_REQUEST_BODY.joined("EOF")
    try:
        # Go's Decoder reads one value and ignores trailing data.
        value, _ = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(text)
    except (ValueError, RecursionError) as exc:
        raise BAD_REQUEST_BODY.joined(_json_error(exc)) from None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _json_error(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid character at offset {exc.pos}: {exc.msg}"
    return str(exc)


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def type_error(value: Any, where: str, gotype: str) -> ApiError:
    return BAD_REQUEST_BODY.joined(
        f"json: cannot unmarshal {json_type(value)} into Go {where} of type {gotype}"
    )


def expect_object(value: Any, gotype: str) -> dict[str, Any]:
    """A top-level body must be an object (``null`` decodes to nothing)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise type_error(value, "value", gotype)
    return value


def field(obj: dict[str, Any], key: str) -> Any:
    """Exact key first, then Go's case-insensitive match; ``_MISSING`` if absent or null."""
    if key in obj:
        value = obj[key]
    else:
        lowered = key.lower()
        for k, v in obj.items():
            if k.lower() == lowered:
                value = v
                break
        else:
            return _MISSING
    return _MISSING if value is None else value


def is_missing(value: Any) -> bool:
    return value is _MISSING


def as_string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise type_error(value, f"struct field {where}", "string")
    return value


def as_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise type_error(value, f"struct field {where}", "bool")
    return value


def as_int64(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(value, f"struct field {where}", "int64")
    if not INT64_MIN <= value <= INT64_MAX:
        raise type_error(value, f"struct field {where}", "int64")
    return value


def as_float32(value: Any, where: str) -> float:
    """Round to float32 like Go and keep the shortest decimal that round-trips."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(value, f"struct field {where}", "float32")
    try:
        f32 = struct.unpack("f", struct.pack("f", float(value)))[0]
    except OverflowError:
        raise type_error(value, f"struct field {where}", "float32") from None
    if math.isinf(f32):
        raise type_error(value, f"struct field {where}", "float32")
    for digits in range(1, 10):
        candidate = float(f"{f32:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == f32:
            return candidate
    return f32


def go_json(value: Any) -> str:
    """Serialise like Go's json.Marshal: compact, HTML-escaped, integral floats as ints."""
    text = json.dumps(_normalise(value), separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value
