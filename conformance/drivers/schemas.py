"""JSON Schemas of the driver protocol (``schema/*.json``) and validators for them."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"


@functools.cache
def load_schemas() -> dict[str, dict[str, Any]]:
    """``{"command.connect": {...}, "event.reply": {...}, "result.trigger": {...}, ...}``"""
    return {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))}


def command_names() -> list[str]:
    return sorted(k.split(".", 1)[1] for k in load_schemas() if k.startswith("command."))


def event_names() -> list[str]:
    return sorted(k.split(".", 1)[1] for k in load_schemas() if k.startswith("event."))


@functools.cache
def _validator(key: str) -> Any:
    import jsonschema

    schema = load_schemas()[key]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _check(key: str, obj: Any) -> None:
    if key not in load_schemas():
        raise ValueError(f"no schema {key}")
    _validator(key).validate(obj)


def validate_command(obj: Any) -> None:
    """Raise ``jsonschema.ValidationError`` (or ValueError for an unknown cmd)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("cmd"), str):
        raise ValueError(f"not a command object: {obj!r}")
    _check(f"command.{obj['cmd']}", obj)


def validate_event(obj: Any) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        raise ValueError(f"not an event object: {obj!r}")
    clean = {k: v for k, v in obj.items() if not k.startswith("_")}  # client-added fields
    _check(f"event.{obj['event']}", clean)


def validate_result(cmd: str, result: Any) -> None:
    """Validate a reply ``result`` for commands that have a result schema."""
    key = f"result.{cmd}"
    if key in load_schemas():
        _check(key, result)
