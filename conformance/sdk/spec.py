"""Parsing of SDK selections: ``python@0.25.0``, ``node@/path/to/checkout``, custom drivers."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

LANGUAGES = ("python", "node")

_NODE_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
# PEP 440 public version (canonical regex from the spec, case-insensitive, no local part).
_PEP440 = re.compile(
    r"^v?(?:(?:[0-9]+)!)?[0-9]+(?:\.[0-9]+)*"
    r"(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?"
    r"(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?"
    r"(?:[-_.]?dev[-_.]?[0-9]*)?$",
    re.IGNORECASE,
)


class SdkInstallError(RuntimeError):
    """An SDK could not be selected or installed. Raised before any check runs."""


class SdkSpecError(SdkInstallError, ValueError):
    """The SDK selection string itself is malformed."""


@dataclass(frozen=True)
class SdkSpec:
    """Which SDK a driver runs.

    ``language`` is ``"python"``, ``"node"`` or ``"custom"``. Exactly one of
    ``version`` (a registry release), ``path`` (a local checkout, absolute) or
    ``command`` (a custom driver's argv, language ``"custom"``) is set.
    """

    language: str
    version: str | None = None
    path: str | None = None
    command: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        if self.language == "custom":
            return "custom:" + shlex.join(self.command or ())
        return f"{self.language}@{self.version or self.path}"

    def __str__(self) -> str:
        return self.label


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~"))
        or text in (".", "..")
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
    )


def parse_sdk_spec(text: str) -> SdkSpec:
    """Parse ``LANG@VERSION`` or ``LANG@PATH``.

    ``python@0.25.0`` / ``node@0.22.1`` select a registry release (exact
    version only: ranges and dist-tags would make the cache lie).
    ``python@/src/iii/sdk/packages/python/iii`` / ``node@./checkout`` select
    a local checkout; the path must exist and is made absolute.
    Raises :class:`SdkSpecError` (an :class:`SdkInstallError`) when malformed.
    """
    if not isinstance(text, str):
        raise SdkSpecError(f"SDK spec must be a string, got {type(text).__name__}")
    raw = text.strip()
    if "@" not in raw:
        raise SdkSpecError(
            f"bad SDK spec {text!r}: expected LANG@VERSION or LANG@PATH "
            f"(LANG one of {', '.join(LANGUAGES)}), e.g. python@0.25.0, node@0.22.1"
        )
    lang, _, rest = raw.partition("@")
    lang = lang.strip().lower()
    rest = rest.strip()
    if lang not in LANGUAGES:
        raise SdkSpecError(
            f"bad SDK spec {text!r}: unknown language {lang!r} (expected one of "
            f"{', '.join(LANGUAGES)}; use --driver CMD for other drivers)"
        )
    if not rest:
        raise SdkSpecError(f"bad SDK spec {text!r}: missing version or path after '@'")
    if _looks_like_path(rest):
        path = os.path.abspath(os.path.expanduser(rest))
        if not os.path.isdir(path):
            raise SdkSpecError(f"bad SDK spec {text!r}: {path} is not a directory")
        marker = "package.json" if lang == "node" else ("pyproject.toml", "setup.py")
        markers = (marker,) if isinstance(marker, str) else marker
        if not any(os.path.exists(os.path.join(path, m)) for m in markers):
            raise SdkSpecError(
                f"bad SDK spec {text!r}: {path} has no {' or '.join(markers)}; "
                f"not a {lang} package checkout"
            )
        return SdkSpec(language=lang, path=path)
    pattern = _NODE_SEMVER if lang == "node" else _PEP440
    if not pattern.match(rest):
        kind = "a semver version like 0.22.1" if lang == "node" else "a PEP 440 version like 0.25.0"
        raise SdkSpecError(f"bad SDK spec {text!r}: {rest!r} is not {kind}")
    return SdkSpec(language=lang, version=rest)


def custom_driver_spec(command: str | Sequence[str]) -> SdkSpec:
    """A driver the harness does not install: ``--driver "./my-rust-driver --flag"``.

    A string is split with shell rules; the command is run as given.
    """
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if not argv:
        raise SdkSpecError("custom driver command is empty")
    return SdkSpec(language="custom", command=tuple(argv))
