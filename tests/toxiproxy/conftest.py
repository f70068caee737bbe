"""Fixtures: the embedded server (thread-backed) and, when TOXIPROXY_URL is set, a real one.

Every test taking ``tp`` runs once per target, so the same assertions hold the embedded
server and a real toxiproxy to the same behaviour (differential conformance).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tp_helpers import Upstream

from fault_injection.toxiproxy import EmbeddedToxiproxy, ThreadedToxiproxy
from fault_injection.toxiproxy_client import Toxiproxy

TARGETS = ["embedded"] + (["real"] if os.environ.get("TOXIPROXY_URL") else [])


@dataclass
class Target:
    name: str  # "embedded" or "real"
    url: str
    client: Toxiproxy

    @property
    def embedded(self) -> bool:
        return self.name == "embedded"


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[ThreadedToxiproxy]:
    server = EmbeddedToxiproxy.start_in_thread(seed=20240601)
    yield server
    server.stop()


@pytest.fixture(params=TARGETS)
def tp(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A clean server (no proxies) per test; the real one is reset and emptied too."""
    if request.param == "embedded":
        url = request.getfixturevalue("embedded_server").url
    else:
        url = os.environ["TOXIPROXY_URL"]
    client = Toxiproxy(url, timeout=10.0)
    client.destroy_all()
    yield Target(request.param, client.url, client)
    client.destroy_all()
    client.close()


@pytest.fixture
def echo() -> Iterator[Upstream]:
    server = Upstream("echo")
    yield server
    server.close()


@pytest.fixture
def sink() -> Iterator[Upstream]:
    server = Upstream("sink")
    yield server
    server.close()


@pytest.fixture(scope="session", autouse=True)
def _fast_thread_handoff() -> Iterator[None]:
    """The embedded server, upstreams and clients share one process and its GIL.

    CPython's default 5 ms switch interval would add up to 5 ms per thread hand-off to
    measured times; 0.5 ms keeps timing assertions about the proxy, not the GIL.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(old)
