"""Per-SDK expectation manifests (DataDog system-tests style).

A manifest declares known deviations of one SDK: a check id (or glob) maps to a list of entries
``{declare: bug|missing_feature|irrelevant, reason: ..., versions: "<=0.22.1"}``. A declared
FAILED stays visible but does not fail the gate; a declared check that passes is reported as an
unexpected pass; ``irrelevant`` checks are not run.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

BUILTIN_DIR = Path(__file__).with_name("manifests")
DECLARATIONS = ("bug", "missing_feature", "irrelevant")


class ManifestError(ValueError):
    """A manifest file that cannot be used; names the file and the entry."""


@dataclass(frozen=True)
class Declaration:
    check: str
    declare: str
    reason: str
    versions: str | None = None

    def applies(self, check_id: str, version: str | None) -> bool:
        if not fnmatch.fnmatchcase(check_id, self.check):
            return False
        if self.versions is None or version is None:
            return self.versions is None or version is None
        try:
            return Version(version) in SpecifierSet(self.versions)
        except InvalidVersion:
            return False

    def text(self) -> str:
        return f"{self.declare}: {self.reason}"


def load(path: str | os.PathLike[str]) -> list[Declaration]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read manifest {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{p}: expected a mapping of check id -> declarations")
    out = []
    for check_id, entries in data.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            out.append(_entry(p, str(check_id), entry))
    return out


def _entry(p: Path, check_id: str, entry: Any) -> Declaration:
    if not isinstance(entry, dict):
        raise ManifestError(f"{p}: {check_id}: each declaration is a mapping")
    declare, reason = entry.get("declare"), entry.get("reason")
    if declare not in DECLARATIONS:
        raise ManifestError(f"{p}: {check_id}: declare must be one of {DECLARATIONS}")
    if not isinstance(reason, str) or not reason.strip():
        raise ManifestError(f"{p}: {check_id}: a declaration needs a reason")
    versions = entry.get("versions")
    if versions is not None:
        try:
            SpecifierSet(str(versions))
        except InvalidSpecifier as exc:
            raise ManifestError(f"{p}: {check_id}: bad versions {versions!r}: {exc}") from exc
    return Declaration(check_id, declare, reason.strip(), str(versions) if versions else None)


def for_language(language: str, extra: list[str] | None = None) -> list[Declaration]:
    """The built-in manifest of a language plus any user manifests given."""
    decls: list[Declaration] = []
    builtin = BUILTIN_DIR / f"{language}.yml"
    if builtin.exists():
        decls += load(builtin)
    for path in extra or []:
        decls += load(path)
    return decls


def lookup(decls: list[Declaration], check_id: str, version: str | None) -> Declaration | None:
    for d in decls:
        if d.applies(check_id, version):
            return d
    return None
