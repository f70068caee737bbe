"""Toxic semantics on real sockets (the data-path half of anchors §2.3/§2.4).

Timing tolerances follow toxiproxy's own tests: one-way latency ±(jitter + 10) ms,
round trips ±(sum + 20) ms; lower bounds get 1 ms for timer granularity only.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import Target
from tp_helpers import Upstream, connect, is_open, read_to_end, recv_exact, roundtrip_ms

from fault_injection.toxiproxy_client import Proxy


def make(tp: Target, upstream: Upstream, name: str = "p") -> Proxy:
    return tp.client.create(upstream=upstream.addr, name=name, listen="127.0.0.1:0")


# -- pass-through ----------------------------------------------------------------------------
def test_large_messages_echo_intact(tp: Target, echo: Upstream) -> None:
    sock = connect(make(tp, echo).listen)
    msg = os.urandom(32 * 1024)
    sock.sendall(msg)
    assert recv_exact(sock, len(msg)) == msg
    hexmsg = os.urandom(32 * 1024).hex().encode()  # 64 KB of hex
    sock.sendall(hexmsg)
    assert recv_exact(sock, len(hexmsg)) == hexmsg
    sock.close()


# -- latency ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("up", "down"),
    [(100, 0), (0, 100), (100, 100), (1000 // 10, 100 // 10), (0, 0)],
    ids=["upstream", "downstream", "both", "bias", "zero"],
)
def test_latency_round_trip(tp: Target, echo: Upstream, up: int, down: int) -> None:
    proxy = make(tp, echo)
    if up:
        proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": up})
    if down:
        proxy.add_toxic(type="latency", stream="downstream", attributes={"latency": down})
    sock = connect(proxy.listen)
    rtt = roundtrip_ms(sock)
    sock.close()
    assert up + down - 1 <= rtt <= up + down + 20, rtt  # ±(sum + 20) ms round trip


def test_latency_jitter_bounds(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="latency", attributes={"latency": 50, "jitter": 20})
    sock = connect(proxy.listen)
    samples = [roundtrip_ms(sock) for _ in range(8)]
    sock.close()
    for rtt in samples:
        assert 50 - 20 - 1 <= rtt <= 50 + 20 + 10, samples  # ±(jitter + 10) ms


def test_stacked_latency_adds(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="latency", stream="upstream", name="l1", attributes={"latency": 250})
    proxy.add_toxic(type="latency", stream="upstream", name="l2", attributes={"latency": 250})
    sock = connect(proxy.listen)
    rtt = roundtrip_ms(sock)
    sock.close()
    assert 499 <= rtt <= 510, rtt  # toxiproxy: two 500 ms toxics → 1000 ± 10 ms (halved here)


def test_latency_is_pipelined_not_serialised(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="latency", attributes={"latency": 100})
    sock = connect(proxy.listen)
    start = time.perf_counter()
    for i in range(10):
        sock.sendall(bytes([i]))
        time.sleep(0.01)
    recv_exact(sock, 10)
    elapsed = (time.perf_counter() - start) * 1000
    sock.close()
    # Ten chunks 10 ms apart each delayed 100 ms: ≈ 190 ms if pipelined, ≥ 1000 if serialised.
    assert elapsed < 100 + 100 + 40, elapsed


# -- bandwidth ------------------------------------------------------------------------------
def test_bandwidth(tp: Target, sink: Upstream) -> None:
    # Like toxiproxy's TestBandwidthToxic: one way, client → proxy → upstream.
    proxy = make(tp, sink)
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 1000})  # 1000 KB/s
    sock = connect(proxy.listen)
    upstream = sink.wait_conn()
    payload = os.urandom(480_000)
    start = time.monotonic()
    sock.sendall(payload)
    last = upstream.wait_bytes(len(payload))
    elapsed = (last - start) * 1000
    sock.close()
    assert bytes(upstream.received) == payload
    assert 480 - 10 <= elapsed <= 480 + 10, elapsed  # toxiproxy: 480 ± 10 ms


# -- timeout ----------------------------------------------------------------------------------
def test_timeout_rearms_on_every_chunk(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 200})
    sock = connect(proxy.listen)
    for _ in range(8):  # 400 ms of pings every 50 ms: never idle for 200 ms
        sock.sendall(b"p")
        last = time.perf_counter()
        time.sleep(0.05)
    assert is_open(sock, 0.0001)
    data, err, _ = read_to_end(sock, timeout=2)
    waited = (time.perf_counter() - last) * 1000
    sock.close()
    assert data == b"" and err in (None, "ConnectionResetError")  # blackholed, then closed
    assert 200 - 1 <= waited <= 200 + 50, waited


def test_timeout_zero_blackholes_forever(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    sock = connect(proxy.listen)
    sock.sendall(b"hello")
    assert is_open(sock, 0.3)
    sock.close()


def test_removing_timeout_closes_both_sides(tp: Target, sink: Upstream) -> None:
    proxy = make(tp, sink)
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    sock = connect(proxy.listen)
    sock.sendall(b"x")
    upstream = sink.wait_conn()
    assert is_open(sock, 0.05)
    start = time.perf_counter()
    proxy.destroy_toxic("timeout_downstream")
    data, err, _ = read_to_end(sock, timeout=1.0)
    assert err in (None, "ConnectionResetError"), err  # EOF within 1 s on the client…
    assert upstream.done.wait(1.0)  # …and on the upstream side
    assert (time.perf_counter() - start) < 1.0
    sock.close()


def test_removing_latency_in_front_of_timeout_does_not_hang(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="latency", name="lat", attributes={"latency": 1000})
    proxy.add_toxic(type="timeout", name="to", attributes={"timeout": 0})
    sock = connect(proxy.listen)
    sock.sendall(b"x")
    time.sleep(0.05)
    start = time.perf_counter()
    proxy.destroy_toxic("lat")
    assert time.perf_counter() - start < 1.0
    sock.close()


# -- reset_peer -------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_reset_peer_sends_rst(tp: Target, echo: Upstream, stream: str) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="reset_peer", stream=stream, attributes={"timeout": 100})
    sock = connect(proxy.listen)
    start = time.perf_counter()
    sock.sendall(b"hello")
    data, err, _ = read_to_end(sock, timeout=2)
    elapsed = (time.perf_counter() - start) * 1000
    assert err == "ConnectionResetError", (data, err)
    assert 100 - 1 <= elapsed <= 210, elapsed  # toxiproxy: within 100–210 ms
    assert read_to_end(sock, timeout=1)[1] is None  # then EOF
    sock.close()


def test_reset_peer_added_to_live_connection_closes_normally(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    sock = connect(proxy.listen)
    assert roundtrip_ms(sock) < 1000
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 0})
    sock.sendall(b"x")
    data, err, _ = read_to_end(sock, timeout=2)
    # SO_LINGER 0 is only set on links started while the toxic exists: FIN, not RST.
    assert err is None, err
    sock.close()


# -- slicer ------------------------------------------------------------------------------------
def test_slicer_preserves_bytes_and_splits_reads(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(
        type="slicer", attributes={"average_size": 1024, "size_variation": 512, "delay": 2000}
    )
    sock = connect(proxy.listen)
    payload = os.urandom(48_000)
    sock.sendall(payload)
    got = bytearray()
    reads = 0
    while len(got) < len(payload):
        got += recv_exact(sock, 1) + sock.recv(65536)
        reads += 1
    sock.close()
    assert bytes(got) == payload
    # 48 000 B in ≤1536 B slices 2 ms apart arrive in many reads (one read without slicer).
    assert reads >= 10, reads


# -- limit_data -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("writes", "expected"),
    [([50], 50), ([100], 100), ([150], 100), ([25, 25, 25, 25], 100), ([90, 20], 100)],
    ids=["50", "100", "150", "4x25", "90+20"],
)
def test_limit_data(tp: Target, echo: Upstream, writes: list[int], expected: int) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="limit_data", attributes={"bytes": 100})
    sock = connect(proxy.listen)
    sent = b""
    for n in writes:
        chunk = os.urandom(n)
        sent += chunk
        sock.sendall(chunk)
        time.sleep(0.02)  # keep writes as separate chunks
    data, err, _ = read_to_end(sock, timeout=0.5 if expected < 100 else 2)
    sock.close()
    assert data == sent[:expected]
    assert (err == "timeout") == (expected < 100)  # closed exactly when the limit is reached


def test_limit_data_zero_closes_without_forwarding(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="limit_data", attributes={"bytes": 0})
    sock = connect(proxy.listen)
    sock.sendall(b"abc")
    data, err, _ = read_to_end(sock, timeout=2)
    sock.close()
    assert data == b"" and err in (None, "ConnectionResetError")


def test_limit_data_state_survives_update(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="limit_data", attributes={"bytes": 100})
    sock = connect(proxy.listen)
    sock.sendall(b"a" * 60)
    assert recv_exact(sock, 60) == b"a" * 60
    proxy.update_toxic("limit_data_downstream", toxicity=1.0)  # restart keeps per-link state
    sock.sendall(b"b" * 60)
    data, err, _ = read_to_end(sock, timeout=2)
    sock.close()
    assert data == b"b" * 40 and err in (None, "ConnectionResetError")


# -- slow_close --------------------------------------------------------------------------------
def test_slow_close_delays_eof(tp: Target) -> None:
    hello = Upstream("hello_close")
    try:
        proxy = make(tp, hello)
        proxy.add_toxic(type="slow_close", attributes={"delay": 200})
        sock = connect(proxy.listen)
        start = time.perf_counter()
        assert recv_exact(sock, 2) == b"hi"  # data passes untouched
        data, err, _ = read_to_end(sock, timeout=2)
        elapsed = (time.perf_counter() - start) * 1000
        sock.close()
        assert data == b"" and err is None
        assert 200 - 1 <= elapsed <= 200 + 50, elapsed
    finally:
        hello.close()


# -- toxicity ----------------------------------------------------------------------------------
def test_toxicity_zero_passes_then_update_applies(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="timeout", toxicity=0.0, attributes={"timeout": 100})
    sock = connect(proxy.listen)
    assert roundtrip_ms(sock) < 1000  # toxicity 0: the link runs a noop
    start = time.perf_counter()
    proxy.update_toxic("timeout_downstream", toxicity=1.0)
    data, err, _ = read_to_end(sock, timeout=2)
    elapsed = (time.perf_counter() - start) * 1000
    sock.close()
    assert err in (None, "ConnectionResetError")
    assert elapsed <= 150, elapsed  # toxiproxy: EOF within 150 ms


# -- live chain edits -------------------------------------------------------------------------
def test_bytes_stay_ordered_while_toxics_toggle(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    sock = connect(proxy.listen)
    stop = threading.Event()
    toggles = [0]

    def toggle() -> None:
        while not stop.is_set():
            proxy.add_toxic(type="latency", name="t", attributes={"latency": 1})
            proxy.add_toxic(type="noop", stream="upstream", name="n")
            proxy.destroy_toxic("t")
            proxy.destroy_toxic("n")
            toggles[0] += 1

    expected = b"".join(i.to_bytes(2, "big") for i in range(65535))
    got = bytearray()

    def reader() -> None:
        got.extend(recv_exact(sock, len(expected), timeout=20))

    threads = [threading.Thread(target=toggle), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        for off in range(0, len(expected), 2 * 64):
            sock.sendall(expected[off : off + 2 * 64])
    finally:
        threads[1].join(25)
        stop.set()
        threads[0].join(10)
        sock.close()
    assert toggles[0] > 0
    assert bytes(got) == expected


def test_reset_keeps_existing_connections_working(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="latency", attributes={"latency": 20})
    sock = connect(proxy.listen)
    assert roundtrip_ms(sock) >= 19
    tp.client.reset()
    assert roundtrip_ms(sock) < 15
    sock.close()


def test_round_trips_while_noop_toxics_toggle(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    sock = connect(proxy.listen)
    for i in range(100):
        if i % 2 == 0:
            proxy.add_toxic(type="noop", stream="upstream", name="u")
            proxy.add_toxic(type="noop", name="d")
        else:
            proxy.destroy_toxic("u")
            proxy.destroy_toxic("d")
        sock.sendall(i.to_bytes(2, "big"))
        assert recv_exact(sock, 2) == i.to_bytes(2, "big")
    sock.close()


def test_removing_toxic_on_broken_connection_terminates(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="latency", attributes={"latency": 200})
    sock = connect(proxy.listen)
    sock.sendall(b"x")
    sock.close()
    time.sleep(0.05)
    start = time.perf_counter()
    proxy.destroy_toxic("latency_downstream")
    assert time.perf_counter() - start < 1.0


def test_disable_closes_existing_connections(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    sock = connect(proxy.listen)
    assert roundtrip_ms(sock) < 1000
    proxy.disable()
    data, err, _ = read_to_end(sock, timeout=2)
    assert err in (None, "ConnectionResetError")
    sock.close()


def test_add_dial_remove_loop_does_not_race(tp: Target, echo: Upstream) -> None:
    # toxiproxy runs this 1000×; 200 keeps the suite fast while still racing add vs dial.
    proxy = make(tp, echo)
    for i in range(200):
        proxy.add_toxic(type="latency", name="l", attributes={"latency": 0})
        sock = connect(proxy.listen)
        proxy.destroy_toxic("l")
        sock.sendall(i.to_bytes(2, "big"))
        assert recv_exact(sock, 2) == i.to_bytes(2, "big")
        sock.close()


def test_stateful_toxic_state_is_per_connection(tp: Target, echo: Upstream) -> None:
    proxy = make(tp, echo)
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    for _ in range(2):  # each new link starts with a fresh byte budget
        sock = connect(proxy.listen)
        sock.sendall(b"0123456789abc")
        data, err, _ = read_to_end(sock, timeout=2)
        sock.close()
        assert data == b"0123456789" and err in (None, "ConnectionResetError")


def test_reset_peer_with_zero_toxicity_still_resets_on_close(tp: Target, echo: Upstream) -> None:
    """toxiproxy #603: SO_LINGER 0 ignores toxicity, so ordinary closes become RSTs."""
    hello = Upstream("hello_close")
    try:
        proxy = make(tp, hello)
        proxy.add_toxic(type="reset_peer", toxicity=0.0, attributes={"timeout": 0})
        try:
            sock = connect(proxy.listen)
        except ConnectionResetError:
            return  # the RST beat connect() back to us: same verdict
        time.sleep(0.1)  # let the upstream's close propagate
        data, err, _ = read_to_end(sock, timeout=2)
        sock.close()
        assert err == "ConnectionResetError", (data, err)
    finally:
        hello.close()
