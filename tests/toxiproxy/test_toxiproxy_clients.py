"""Third-party clients against the server: toxiproxy-python 0.1.1 directly, and the npm
package ``toxiproxy-node-client`` as a second, independent implementation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import toxiproxy
import toxiproxy.api
from conftest import Target
from tp_helpers import Upstream, connect, port_refuses, roundtrip_ms

NODE_CLIENT_VERSION = "4.1.0"
NPM_CACHE = Path(
    os.environ.get("III_NPM_TOOLS", Path.home() / ".cache" / "iii-conformance" / "npm-tools")
)
HERE = Path(__file__).parent


@pytest.fixture
def legacy(tp: Target) -> Iterator[toxiproxy.Toxiproxy]:
    """toxiproxy-python 0.1.1 pointed at the target through its process-global consumer."""
    parts = urlsplit(tp.url)
    old = (toxiproxy.api.APIConsumer.host, toxiproxy.api.APIConsumer.port)
    server = toxiproxy.Toxiproxy()
    server.update_api_consumer(parts.hostname, parts.port)
    yield server
    server.update_api_consumer(*old)


def test_python_client_0_1_1_crud(legacy: toxiproxy.Toxiproxy, echo: Upstream) -> None:
    assert legacy.running()
    assert b"version" in legacy.version()  # 0.1.1 hands back the raw body
    proxy = legacy.create(upstream=echo.addr, name="legacy")
    assert "legacy" in legacy.proxies()
    with pytest.raises(toxiproxy.exceptions.ProxyExists):
        legacy.create(upstream=echo.addr, name="legacy")
    proxy.add_toxic(type="latency", attributes={"latency": 30})
    assert set(proxy.toxics()) == {"latency_downstream"}
    assert proxy.get_toxic("latency_downstream").attributes == {"latency": 30, "jitter": 0}
    sock = connect(proxy.listen)
    assert roundtrip_ms(sock) >= 29
    sock.close()
    with proxy.down():  # disable()/enable() use the deprecated POST update
        assert port_refuses(proxy.listen)
    sock = connect(proxy.listen)
    assert roundtrip_ms(sock) >= 29
    sock.close()
    proxy.destroy_toxic("latency_downstream")
    assert proxy.toxics() == {}
    with pytest.raises(toxiproxy.exceptions.InvalidToxic):
        proxy.add_toxic(type="walrus")
    assert legacy.reset()
    legacy.destroy(proxy)
    with pytest.raises(toxiproxy.exceptions.NotFound):
        proxy.destroy()


def test_python_client_0_1_1_swallows_500(legacy: toxiproxy.Toxiproxy, echo: Upstream) -> None:
    """Documents the 0.1.1 limit the wrapper fixes: a bind error surfaces as KeyError."""
    first = legacy.create(upstream=echo.addr, name="a")
    with pytest.raises(KeyError):
        legacy.create(upstream=echo.addr, name="b", listen=first.listen)


# -- toxiproxy-node-client ------------------------------------------------------------------
def ensure_node_client() -> Path:
    """Install the npm package once into a cache dir; skip if node/npm are missing."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm not installed: cannot run toxiproxy-node-client")
    module = NPM_CACHE / "node_modules" / "toxiproxy-node-client" / "package.json"
    if module.exists() and json.loads(module.read_text())["version"] == NODE_CLIENT_VERSION:
        return NPM_CACHE
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(NPM_CACHE),
            f"toxiproxy-node-client@{NODE_CLIENT_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if proc.returncode != 0 or not module.exists():
        pytest.skip(f"npm install toxiproxy-node-client failed: {proc.stderr.strip()[-500:]}")
    return NPM_CACHE


def test_node_client_crud(tp: Target, echo: Upstream) -> None:
    prefix = ensure_node_client()
    env = {**os.environ, "NODE_PATH": str(prefix / "node_modules")}
    proc = subprocess.run(
        ["node", str(HERE / "node_client_crud.js"), tp.url, echo.addr],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["created"] == {"name": "node", "upstream": echo.addr, "enabled": True}
    assert out["toxic"] == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
        "attributes": {"latency": 25, "jitter": 0},
    }
    assert out["updated_attributes"] == {"latency": 40, "jitter": 0}
    assert out["disabled"] is False
    assert sorted(out["all"]) == ["node", "node2"]
    assert out["populated"] == ["node2"]
    assert out["missing_error"] == "Request failed with status code 404"
    assert json.loads(out["version"])["version"]
    assert out["after_remove"] == ["node2"]
