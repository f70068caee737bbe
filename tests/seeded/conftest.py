"""Fixtures for the seeded-fault tests: the mini SDK (a synthetic worker SDK with selectable
bugs, ``mini_sdk/``) launched through its driver, as the harness launches a custom driver."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.sdk import InstalledSdk, custom_driver_spec, install

MINI_DIR = Path(__file__).resolve().parent / "mini_sdk"
sys.path.insert(0, str(MINI_DIR))  # the tests import mini_sdk (BUGS, backoff) and launch

from launch import mini_command  # noqa: E402


@pytest.fixture(scope="session")
def mini_sdk() -> Callable[[str], InstalledSdk]:
    """``mini_sdk("no_jitter")``: the mini driver as an installed custom SDK."""
    return lambda bug: install(custom_driver_spec(mini_command(bug)))
