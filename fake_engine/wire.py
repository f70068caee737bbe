"""WebSocket I/O for one TCP connection: the sans-I/O ``websockets`` protocol over asyncio streams.

Owning the socket (rather than using ``websockets.serve``) is what lets the engine stall or drop a
dial before the upgrade, abort or reset without a close frame, stop answering pings, and write
frames no well-behaved server would.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from .transcript import ABORT, CLOSE, FRAME, OUT, Transcript

READ_CHUNK = 256 * 1024
# Engine 0.23 leaves tungstenite's defaults: 64 MiB per message.
MAX_MESSAGE = 64 * 1024 * 1024


class EngineProtocol(ServerProtocol):
    """ServerProtocol whose automatic pong can be switched off (a deaf engine)."""

    answer_pings: bool = True

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING and not self.answer_pings:
            self.events.append(frame)
            return
        super().recv_frame(frame)


class WireSocket:
    """One accepted TCP connection, before and after the WebSocket upgrade."""

    def __init__(
        self,
        conn_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transcript: Transcript,
    ):
        self.conn_id = conn_id
        self.reader = reader
        self.writer = writer
        self.transcript = transcript
        self.proto = EngineProtocol(max_size=MAX_MESSAGE)
        self.closed_by: str | None = None
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None

    # -- handshake ---------------------------------------------------------------------------------

    async def read_request(self, timeout: float) -> Request | None:
        """Read bytes until the HTTP upgrade request is parsed; None on EOF, error or timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for ev in self.proto.events_received():
                if isinstance(ev, Request):
                    return ev
            if self.proto.handshake_exc is not None:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                data = await asyncio.wait_for(self.reader.read(READ_CHUNK), remaining)
            except (asyncio.TimeoutError, ConnectionError):
                return None
            if not data:
                self.proto.receive_eof()
                self.flush()
                return None
            self.proto.receive_data(data)
            self.flush()

    def accept(self, request: Request) -> bool:
        response = self.proto.accept(request)
        self.proto.send_response(response)
        self.flush()
        return response.status_code == 101

    def reject(self, status: int, body: str) -> None:
        self.proto.send_response(self.proto.reject(status, body))
        self.flush()

    # -- sending -----------------------------------------------------------------------------------

    def flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                if not self.writer.is_closing():
                    self.writer.write(data)
            elif self.writer.can_write_eof() and not self.writer.is_closing():
                try:
                    self.writer.write_eof()
                except OSError:
                    pass

    @property
    def is_open(self) -> bool:
        return self.proto.state is State.OPEN and not self.writer.is_closing()

    def send_text(self, text: str, message: dict | None = None, *, record: bool = True) -> bool:
        if not self.is_open:
            return False
        self.proto.send_text(text.encode())
        self.flush()
        if record:
            self.transcript.record(
                self.conn_id, FRAME, direction=OUT, opcode="text", raw=text, message=message
            )
        return True

    def send_raw_frame(self, opcode: Opcode, payload: bytes, fin: bool = True) -> bool:
        """Write any frame, bypassing the protocol's state checks (malformed-frame faults)."""
        if self.writer.is_closing():
            return False
        self.writer.write(Frame(opcode, payload, fin=fin).serialize(mask=False))
        preview = payload[:200].decode("utf-8", "replace")
        self.transcript.record(
            self.conn_id,
            FRAME,
            direction=OUT,
            opcode=opcode.name.lower(),
            raw=preview,
            detail={"bytes": len(payload), "fin": fin},
        )
        return True

    def send_ping(self, data: bytes = b"") -> None:
        if self.is_open:
            self.proto.send_ping(data)
            self.flush()
            self.transcript.record(self.conn_id, FRAME, direction=OUT, opcode="ping")

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (the transport closes when the peer answers or times out)."""
        if self.proto.state is State.OPEN:
            self.closed_by = self.closed_by or "engine"
            self.proto.send_close(code, reason)
            self.flush()
            self.transcript.record(
                self.conn_id,
                CLOSE,
                direction=OUT,
                detail={"code": code, "reason": reason, "by": "engine"},
            )
            asyncio.get_running_loop().call_later(2.0, self._force_close)

    def abort(self, reset: bool = False) -> None:
        """Drop the TCP connection with no close frame; ``reset`` sends an RST (SO_LINGER 0)."""
        if self.writer.is_closing():
            return
        self.closed_by = self.closed_by or "engine"
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        self.transcript.record(self.conn_id, ABORT, detail={"by": "engine", "reset": reset})
        self.writer.transport.abort()

    def _force_close(self) -> None:
        if not self.writer.is_closing():
            self.writer.transport.abort()

    # -- receiving ---------------------------------------------------------------------------------

    async def frames(
        self, on_message: Callable[[Opcode, bytes], None], on_control: Callable[[Frame], None]
    ) -> None:
        """Read until the connection ends, handing each complete data message to ``on_message``."""
        proto = self.proto
        while True:
            try:
                data = await self.reader.read(READ_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            self.flush()
            for frame in proto.events_received():
                if not isinstance(frame, Frame):
                    continue
                op = frame.opcode
                if op is Opcode.TEXT or op is Opcode.BINARY:
                    if frame.fin:
                        on_message(op, frame.data)
                    else:
                        self._fragment_opcode = op
                        self._fragments = [frame.data]
                elif op is Opcode.CONT:
                    self._fragments.append(frame.data)
                    if frame.fin and self._fragment_opcode is not None:
                        payload = b"".join(self._fragments)
                        self._fragments = []
                        op0, self._fragment_opcode = self._fragment_opcode, None
                        on_message(op0, payload)
                else:
                    on_control(frame)
            # After a closing handshake we keep reading until the peer's FIN (bounded by the
            # force-close timer `close()` arms).
            if not data or proto.state is State.CLOSED:
                break
        if not self.writer.is_closing():
            self.writer.close()
