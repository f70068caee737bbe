"""Small text helpers shared by the renderers (XML-safe text, truncation, evidence excerpts)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .results_json import jsonable

# XML 1.0 forbids most C0 controls, lone surrogates and U+FFFE/U+FFFF; malformed-payload
# checks routinely put such characters in messages and evidence.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: Any) -> str:
    """``text`` as a string with XML-illegal characters replaced by ``\\xNN`` escapes."""
    return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def truncate(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "\u2026"


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return truncate(line, limit)


def _compact(value: Any, indent: int, width: int) -> str:
    """JSON with containers of scalars kept on one line when they fit in ``width``."""
    flat = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or len(flat) + indent <= width or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {_compact(v, indent + 2, width)}"
            for k, v in sorted(value.items())
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _compact(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def pretty_json(value: Any, limit: int = 0, width: int = 100) -> str:
    """Readable JSON of evidence: sorted keys, short containers on one line (one gap
    record per line), optionally truncated to ``limit`` characters."""
    text = _compact(jsonable(value), 0, width)
    return truncate(text, limit) if limit else text


def _short(value: Any, limit: int) -> str:
    if isinstance(value, (list, tuple)):
        head = ", ".join(_short(v, max(40, limit // 5)) for v in list(value)[:5])
        more = f", \u2026 ({len(value)} items)" if len(value) > 5 else ""
        return truncate(f"[{head}{more}]", limit)
    if isinstance(value, Mapping):
        return truncate(json.dumps(value, sort_keys=True, default=repr), limit)
    if isinstance(value, str):
        return truncate(repr(value), limit)
    return truncate(json.dumps(jsonable(value), ensure_ascii=False), limit)


def evidence_summary(evidence: Mapping[str, Any], limit_per_key: int = 160) -> list[str]:
    """One ``key: value`` line per evidence key, long values and lists abbreviated."""
    return [f"{key}: {_short(evidence[key], limit_per_key)}" for key in sorted(evidence)]


def slug(*parts: str) -> str:
    text = "-".join(parts).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "x"
