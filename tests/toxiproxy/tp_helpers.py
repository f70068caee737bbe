"""Real-socket helpers for the toxiproxy tests: upstream servers and bounded reads."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field

IO_TIMEOUT = 5.0  # every blocking socket call in these tests is bounded by this


@dataclass
class UpstreamConn:
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    error: str | None = None  # e.g. "ConnectionResetError" when the proxy sent RST
    done: threading.Event = field(default_factory=threading.Event)
    progress: threading.Condition = field(default_factory=threading.Condition)
    last_data_at: float | None = None

    def wait_bytes(self, n: int, timeout: float = IO_TIMEOUT) -> float:
        """Block until ``n`` bytes arrived; return the monotonic time the last one did."""
        with self.progress:
            if not self.progress.wait_for(
                lambda: len(self.received) >= n or self.done.is_set(), timeout
            ):
                raise TimeoutError(f"only {len(self.received)} of {n} bytes arrived")
        if len(self.received) < n:
            raise EOFError(f"closed after {len(self.received)} of {n} bytes")
        assert self.last_data_at is not None
        return self.last_data_at


class Upstream:
    """A threaded TCP server on 127.0.0.1 that records every connection.

    Modes: ``echo`` (send back what arrives), ``sink`` (only record),
    ``hello_close`` (send ``b"hi"`` then close).
    """

    def __init__(self, mode: str = "echo") -> None:
        self.mode = mode
        self.conns: list[UpstreamConn] = []
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.addr = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _handle(self, sock: socket.socket) -> None:
        conn = UpstreamConn(sock)
        with self._new:
            self.conns.append(conn)
            self._new.notify_all()
        sock.settimeout(30.0)
        try:
            if self.mode == "hello_close":
                sock.sendall(b"hi")
                return
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                with conn.progress:
                    conn.received += data
                    conn.last_data_at = time.monotonic()
                    conn.progress.notify_all()
                if self.mode == "echo":
                    sock.sendall(data)
        except OSError as exc:
            conn.error = type(exc).__name__
        finally:
            conn.closed_at = time.monotonic()
            with conn.progress:
                conn.done.set()
                conn.progress.notify_all()
            sock.close()

    def wait_conn(self, index: int = 0, timeout: float = IO_TIMEOUT) -> UpstreamConn:
        deadline = time.monotonic() + timeout
        with self._new:
            while len(self.conns) <= index:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"upstream connection #{index} never arrived")
                self._new.wait(remaining)
            return self.conns[index]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for conn in self.conns:
            try:
                conn.sock.close()
            except OSError:
                pass
        self._thread.join(IO_TIMEOUT)


def host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def connect(listen: str, timeout: float = IO_TIMEOUT) -> socket.socket:
    sock = socket.create_connection(host_port(listen), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, n: int, timeout: float = IO_TIMEOUT) -> bytes:
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def read_to_end(
    sock: socket.socket, timeout: float = IO_TIMEOUT
) -> tuple[bytes, str | None, list[int]]:
    """Read until EOF or error: (data, error name or None, sizes of each read)."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    sizes: list[int] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buf), "timeout", sizes
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return bytes(buf), "timeout", sizes
        except OSError as exc:
            return bytes(buf), type(exc).__name__, sizes
        if not data:
            return bytes(buf), None, sizes
        sizes.append(len(data))
        buf += data


def roundtrip_ms(sock: socket.socket, payload: bytes = b"x") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    recv_exact(sock, len(payload))
    return (time.perf_counter() - start) * 1000.0


def is_open(sock: socket.socket, wait: float) -> bool:
    """True if nothing (no EOF/RST) arrives within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    except OSError:
        return False
    return bool(data)


def port_refuses(listen: str) -> bool:
    try:
        socket.create_connection(host_port(listen), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False
