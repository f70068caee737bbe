"""A small HTTP/1.1 server on asyncio streams (keep-alive, Content-Length, chunked bodies).

Enough for toxiproxy's JSON API and the clients that talk to it; every read is bounded
by a timeout (15 s per request, 60 s idle, like toxiproxy's ``http.Server``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

READ_TIMEOUT = 15.0
IDLE_TIMEOUT = 60.0
MAX_HEADER_BYTES = 1 << 16
MAX_BODY_BYTES = 16 << 20


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEADER_BYTES)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    request, keep_alive = await self._read_request(reader, writer)
                except BadRequest as exc:
                    text = f"{exc.status} {HTTPStatus(exc.status).phrase}"
                    await self._write(writer, Response(exc.status, text.encode()), False)
                    return
                if request is None:
                    return
                try:
                    response = await self.handler(request)
                except Exception as exc:  # never leave a client hanging
                    response = Response(
                        500,
                        f"internal error: {exc!r}\n".encode(),
                        [("Content-Type", "text/plain; charset=utf-8")],
                    )
                await self._write(writer, response, keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # server shutdown; our own task, and streams would log a re-raise
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[Request | None, bool]:
        try:
            line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
        except (asyncio.LimitOverrunError, ValueError):
            raise BadRequest(431, "request line too long") from None
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
            line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
        if not line:
            return None, False
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        total = len(line)
        while True:
            try:
                raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            except (asyncio.LimitOverrunError, ValueError):
                raise BadRequest(431, "header too long") from None
            total += len(raw)
            if total > MAX_HEADER_BYTES:
                raise BadRequest(431, "headers too large")
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise BadRequest(400, "malformed header")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(reader, headers)
        path = unquote(urlsplit(target).path or "/")
        return Request(method.upper(), path, headers, body), keep_alive

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            size_total = 0
            while True:
                size_line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                try:
                    size = int(size_line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise BadRequest(400, "bad chunk size") from None
                if size == 0:
                    while (await asyncio.wait_for(reader.readline(), READ_TIMEOUT)) not in (
                        b"\r\n",
                        b"\n",
                        b"",
                    ):
                        pass
                    return b"".join(chunks)
                size_total += size
                if size_total > MAX_BODY_BYTES:
                    raise BadRequest(413, "body too large")
                chunks.append(await asyncio.wait_for(reader.readexactly(size), READ_TIMEOUT))
                await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        length_text = headers.get("content-length", "0").strip() or "0"
        if not length_text.isdigit():
            raise BadRequest(400, "bad content-length")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, "body too large")
        if length == 0:
            return b""
        return await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)

    async def _write(
        self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool
    ) -> None:
        status = response.status
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        lines = [f"HTTP/1.1 {status} {phrase}"]
        names = {k.lower() for k, _ in response.headers}
        lines += [f"{k}: {v}" for k, v in response.headers]
        lines.append(f"Date: {formatdate(usegmt=True)}")
        if status != 204 and status >= 200:
            lines.append(f"Content-Length: {len(response.body)}")
            if "content-type" not in names and response.body:
                lines.append("Content-Type: text/plain; charset=utf-8")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head + (response.body if status != 204 else b""))
        await asyncio.wait_for(writer.drain(), 30.0)
