"""Embedded-only behaviour: half_open, seeding, in-loop use, CLI, client-wrapper edges."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from tp_helpers import Upstream, connect, read_to_end, roundtrip_ms

from fault_injection.toxiproxy import EmbeddedToxiproxy, ThreadedToxiproxy
from fault_injection.toxiproxy.toxics import slice_bounds
from fault_injection.toxiproxy_client import (
    InvalidToxic,
    NotFound,
    ProxyExists,
    Toxiproxy,
    ToxiproxyServerError,
    ToxiproxyUnavailable,
    parse_version,
    toxiproxy_server,
    toxiproxy_server_sync,
    version_tuple,
)


@pytest.fixture
def client(embedded_server: ThreadedToxiproxy):
    c = Toxiproxy(embedded_server.url)
    c.destroy_all()
    yield c
    c.destroy_all()
    c.close()


# -- half_open ----------------------------------------------------------------------------
def test_half_open_client_side_on_existing_connection(client: Toxiproxy, echo: Upstream) -> None:
    proxy = client.create(upstream=echo.addr, name="h")
    sock = connect(proxy.listen)
    assert roundtrip_ms(sock) < 1000
    upstream = echo.wait_conn()
    start = time.perf_counter()
    proxy.add_toxic(type="half_open", attributes={"side": "client", "delay": 300})
    data, err, _ = read_to_end(sock, timeout=2)
    cut_ms = (time.perf_counter() - start) * 1000
    assert err == "ConnectionResetError", (data, err)  # client side: abort with RST, no FIN
    assert cut_ms < 50, cut_ms  # "at once": the add request returns after the cut
    assert upstream.done.wait(2)
    assert upstream.closed_at is not None
    engine_ms = (upstream.closed_at - start) * 1000
    # Engine side closed `delay` ms later; +50 ms covers the API round trip and thread wake-up.
    assert 300 - 1 <= engine_ms <= 300 + 50, engine_ms
    assert upstream.error is None  # a normal close (FIN) on the engine side
    sock.close()


def test_half_open_upstream_side_drops_data_meanwhile(client: Toxiproxy, sink: Upstream) -> None:
    proxy = client.create(upstream=sink.addr, name="h")
    sock = connect(proxy.listen)
    sock.sendall(b"before")
    upstream = sink.wait_conn()
    deadline = time.monotonic() + 2
    while upstream.received != b"before" and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.perf_counter()
    proxy.add_toxic(
        type="half_open", stream="upstream", attributes={"side": "upstream", "delay": 200}
    )
    assert upstream.done.wait(1)
    assert upstream.error == "ConnectionResetError"  # upstream cut with RST at once
    sock.sendall(b"dropped")  # the client side is still open, but its data goes nowhere
    data, err, _ = read_to_end(sock, timeout=2)
    client_ms = (time.perf_counter() - start) * 1000
    assert data == b"" and err is None  # FIN after the delay
    assert 200 - 1 <= client_ms <= 200 + 50, client_ms
    assert upstream.received == b"before"
    sock.close()


def test_half_open_fires_on_first_chunk_of_new_connections(
    client: Toxiproxy, echo: Upstream
) -> None:
    proxy = client.create(upstream=echo.addr, name="h")
    proxy.add_toxic(
        type="half_open", stream="upstream", attributes={"side": "client", "delay": 100}
    )
    sock = connect(proxy.listen)
    time.sleep(0.1)
    # Connected but silent: nothing fired yet.
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(1)
    sock.sendall(b"go")
    data, err, _ = read_to_end(sock, timeout=2)
    assert err == "ConnectionResetError" and data == b""
    sock.close()


def test_half_open_validates_side(client: Toxiproxy, echo: Upstream) -> None:
    proxy = client.create(upstream=echo.addr, name="h")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="half_open", attributes={"side": "both"})
    toxic = proxy.add_toxic(type="half_open", name="d", toxicity=0)
    assert toxic["attributes"] == {"side": "client", "delay": 0}


# -- seeding -------------------------------------------------------------------------------
def _toxicity_pattern(seed: int, echo: Upstream) -> list[bool]:
    with EmbeddedToxiproxy.start_in_thread(seed=seed) as server, Toxiproxy(server.url) as c:
        proxy = c.create(upstream=echo.addr, name="s")
        proxy.add_toxic(type="latency", toxicity=0.5, attributes={"latency": 30})
        pattern = []
        for _ in range(12):
            sock = connect(proxy.listen)
            pattern.append(roundtrip_ms(sock) >= 29)
            sock.close()
        return pattern


def test_seed_makes_toxicity_reproducible(echo: Upstream) -> None:
    a = _toxicity_pattern(7, echo)
    b = _toxicity_pattern(7, echo)
    assert a == b
    assert True in a and False in a  # 12 fair draws: all-equal has probability 2^-11


def test_slice_bounds_unit() -> None:
    import random

    rng = random.Random(1)
    bounds = slice_bounds(0, 24, 1, 0, rng)
    assert len(bounds) - 1 == 24  # toxiproxy: avg 1, variation 0 on 24 bytes → 24 pieces
    bounds = slice_bounds(0, 480_000, 1024, 512, rng)
    sizes = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    assert 240 <= len(sizes) <= 720 and sum(sizes) == 480_000
    assert all(0 < s <= 1024 + 512 for s in sizes)


# -- in-loop use ------------------------------------------------------------------------------
async def test_in_loop_server_with_async_sockets() -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    echo_srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = echo_srv.sockets[0].getsockname()[1]
    async with EmbeddedToxiproxy(seed=1) as server:
        c = Toxiproxy(server.url)
        # The blocking client must run off-loop when the server shares the loop.
        proxy = await asyncio.to_thread(c.create, f"127.0.0.1:{port}", "loop")
        await asyncio.to_thread(proxy.add_toxic, type="latency", attributes={"latency": 50})
        host, _, lport = proxy.listen.rpartition(":")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(lport)), 5)
        start = time.perf_counter()
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        assert 49 <= (time.perf_counter() - start) * 1000 <= 50 + 20
        writer.close()
        c.close()
    echo_srv.close()
    await echo_srv.wait_closed()


async def test_toxiproxy_server_embedded_and_reset() -> None:
    old = os.environ.pop("TOXIPROXY_URL", None)
    try:
        async with toxiproxy_server(seed=3) as handle:
            assert handle.embedded
            assert version_tuple(await handle.call("version"))[:2] == (2, 12)
    finally:
        if old is not None:
            os.environ["TOXIPROXY_URL"] = old


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_toxiproxy_url_fails_fast_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    url = _dead_url()
    monkeypatch.setenv("TOXIPROXY_URL", url)
    start = time.monotonic()
    with pytest.raises(ToxiproxyUnavailable, match=url.replace(".", r"\.")):
        with toxiproxy_server_sync(timeout=0.5):
            pass
    assert time.monotonic() - start < 3


def test_toxiproxy_url_is_used_and_reset(
    embedded_server: ThreadedToxiproxy, echo: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOXIPROXY_URL", embedded_server.url)
    with toxiproxy_server_sync() as handle:
        assert not handle.embedded and handle.url == embedded_server.url
        proxy = handle.client.create(upstream=echo.addr, name="u")
        proxy.add_toxic(type="latency")
    assert Toxiproxy(embedded_server.url).get_proxy("u").refresh().toxics_data == []
    Toxiproxy(embedded_server.url).destroy_all()


# -- client wrapper ----------------------------------------------------------------------------
def test_wrapper_raises_with_server_messages(client: Toxiproxy, echo: Upstream) -> None:
    proxy = client.create(upstream=echo.addr, name="w")
    with pytest.raises(ProxyExists):
        client.create(upstream=echo.addr, name="w")
    with pytest.raises(ToxiproxyServerError, match="address already in use") as info:
        client.create(upstream=echo.addr, name="w2", listen=proxy.listen)
    assert info.value.status == 500
    with pytest.raises(NotFound):
        client.destroy("nope")
    forbidden = Toxiproxy(client.url)
    forbidden._session.headers["User-Agent"] = "Mozilla/5.0"
    with pytest.raises(ToxiproxyServerError, match="User agent not allowed"):
        forbidden.proxies()
    toxic = proxy.add_toxic(type="latency", attributes={"latency": 10, "jitter": 2})
    assert toxic["name"] == "latency_downstream"
    assert proxy.update_toxic("latency_downstream", attributes={"latency": 20})["attributes"] == {
        "latency": 20,
        "jitter": 2,
    }
    populated = client.populate([{"name": "w", "upstream": echo.addr, "listen": proxy.listen}])
    assert populated[0].name == "w"
    assert client.get_proxy("w").refresh().toxics_data[0]["attributes"]["latency"] == 20


def test_version_parsing() -> None:
    assert parse_version(b'{"version": "2.12.0"}\n') == "2.12.0"
    assert parse_version(b'{"version": "2.6.0"}\\n') == "2.6.0"  # 2.6.x literal backslash-n
    assert parse_version(b"2.1.4\n") == "2.1.4"
    assert version_tuple("v2.5.0") == (2, 5, 0) and version_tuple("git") == ()


# -- thread variant & CLI ----------------------------------------------------------------------
def test_start_in_thread_port_in_use_reports_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            EmbeddedToxiproxy.start_in_thread(port=s.getsockname()[1])


def test_cli_serves_config_and_stops_on_sigterm(tmp_path: Path, echo: Upstream) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "cfg", "upstream": echo.addr, "listen": "127.0.0.1:0"}]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fault_injection.toxiproxy.cli",
            "-port",
            str(port),
            "-config",
            str(config),
            "-seed",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        c = Toxiproxy(f"http://127.0.0.1:{port}")
        c.wait_ready(10)
        assert c.get_proxy("cfg").upstream == echo.addr
        assert requests.get(f"http://127.0.0.1:{port}/version", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def test_metrics_count_bytes(echo: Upstream) -> None:
    with EmbeddedToxiproxy.start_in_thread(metrics=True) as server, Toxiproxy(server.url) as c:
        proxy = c.create(upstream=echo.addr, name="m")
        sock = connect(proxy.listen)
        assert roundtrip_ms(sock, b"12345") < 1000
        sock.close()
        text = requests.get(server.url + "/metrics", timeout=5).text
        assert 'toxiproxy_proxy_received_bytes_total{direction="upstream"' in text
        assert f'listener="{proxy.listen}",proxy="m",upstream="{echo.addr}"}} 5' in text


def test_removing_pending_reset_peer_is_bounded(client: Toxiproxy, echo: Upstream) -> None:
    """Deviation from Go (which blocks the DELETE for the whole timeout): reset now instead."""
    proxy = client.create(upstream=echo.addr, name="r")
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 10_000})
    sock = connect(proxy.listen)
    sock.sendall(b"x")
    time.sleep(0.05)
    start = time.perf_counter()
    proxy.destroy_toxic("reset_peer_downstream")
    data, err, _ = read_to_end(sock, timeout=2)
    assert time.perf_counter() - start < 1.0
    assert err == "ConnectionResetError", (data, err)
    sock.close()
