"""Benchmark the embedded toxiproxy with no toxics against a direct loopback connection.

Runs an echo/sink upstream and ``iii-toxiproxy`` as separate processes (so the proxy's
event loop competes with nothing in this process), then measures from here:
round-trip latency of small messages (p50/p99) and one-way throughput, direct vs proxied,
and prints the ratios. Target: under 0.5 ms added per round trip at p50.

Usage: python bench/bench_proxy.py [--rounds 2000] [--mbytes 64]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request
from contextlib import ExitStack

UPSTREAM = textwrap.dedent(
    """
    import asyncio, struct, sys
    async def echo(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        w.close()
    async def sink(r, w):
        try:
            while head := await r.readexactly(8):
                left = struct.unpack("!Q", head)[0]
                while left:
                    data = await r.read(min(left, 1 << 20))
                    if not data:
                        return
                    left -= len(data)
                w.write(b"ok")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        w.close()
    async def main():
        e = await asyncio.start_server(echo, "127.0.0.1", 0)
        s = await asyncio.start_server(sink, "127.0.0.1", 0)
        print(e.sockets[0].getsockname()[1], s.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, method: str, path: str, body: object = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def wait_api(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            api(url, "GET", "/version")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError
        buf += data
    return bytes(buf)


def rtts_ms(port: int, rounds: int, size: int = 64) -> list[float]:
    payload = b"x" * size
    out = []
    with connect(port) as sock:
        for _ in range(50):  # warm-up
            sock.sendall(payload)
            recv_exact(sock, size)
        for _ in range(rounds):
            t = time.perf_counter()
            sock.sendall(payload)
            recv_exact(sock, size)
            out.append((time.perf_counter() - t) * 1000)
    return out


def throughput_mb_s(port: int, mbytes: int) -> float:
    total = mbytes * 1_000_000
    block = b"\0" * (1 << 20)
    with connect(port) as sock:
        t = time.perf_counter()
        sock.sendall(total.to_bytes(8, "big"))
        left = total
        while left:
            n = min(left, len(block))
            sock.sendall(block[:n])
            left -= n
        assert recv_exact(sock, 2) == b"ok"
        return mbytes / (time.perf_counter() - t)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--mbytes", type=int, default=64)
    args = parser.parse_args()
    with ExitStack() as stack:
        upstream = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True
        )
        stack.callback(lambda: (upstream.kill(), upstream.wait(5)))
        echo_port, sink_port = map(int, upstream.stdout.readline().split())
        api_port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        }
        proxy = subprocess.Popen(
            [sys.executable, "-m", "fault_injection.toxiproxy.cli", "-port", str(api_port)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(lambda: (proxy.terminate(), proxy.wait(10)))
        url = f"http://127.0.0.1:{api_port}"
        wait_api(url)
        p_echo = int(
            api(
                url,
                "POST",
                "/proxies",
                {"name": "echo", "upstream": f"127.0.0.1:{echo_port}", "listen": "127.0.0.1:0"},
            )["listen"].rsplit(":", 1)[1]
        )
        p_sink = int(
            api(
                url,
                "POST",
                "/proxies",
                {"name": "sink", "upstream": f"127.0.0.1:{sink_port}", "listen": "127.0.0.1:0"},
            )["listen"].rsplit(":", 1)[1]
        )

        direct = rtts_ms(echo_port, args.rounds)
        proxied = rtts_ms(p_echo, args.rounds)
        tp_direct = throughput_mb_s(sink_port, args.mbytes)
        tp_proxied = throughput_mb_s(p_sink, args.mbytes)

    d50, d99 = pct(direct, 50), pct(direct, 99)
    p50, p99 = pct(proxied, 50), pct(proxied, 99)
    print(f"round trip of 64 B, {args.rounds} samples (ms):")
    print(f"  direct   p50 {d50:.3f}  p99 {d99:.3f}")
    print(f"  proxied  p50 {p50:.3f}  p99 {p99:.3f}")
    print(f"  added    p50 {p50 - d50:.3f}  p99 {p99 - d99:.3f}   (two proxy legs per round trip)")
    print(f"  ratio    p50 {p50 / d50:.2f}x  p99 {p99 / d99:.2f}x")
    print(f"throughput, {args.mbytes} MB one way (MB/s):")
    print(
        f"  direct {tp_direct:.0f}  proxied {tp_proxied:.0f}  ratio {tp_proxied / tp_direct:.2f}x"
    )
    target = "met" if p50 - d50 < 0.5 else "NOT met"
    print(f"target (< 0.5 ms added at p50): {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
