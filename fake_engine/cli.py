"""``iii-fake-engine``: a local dev engine for SDK authors, with a readable live log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import TextIO

from . import handshake as hs
from .engine import EngineStartError, FakeEngine
from .transcript import FRAME, IN, NOTE, Event


def format_event(ev: Event, t0: int) -> str:
    """One line per event: time since start, connection, arrow, type and a short body."""
    t = (ev.t_ns - t0) / 1e9
    head = f"{t:9.3f}s #{ev.conn:<3}"
    if ev.kind == FRAME:
        arrow = "<-" if ev.direction == IN else "->"
        if ev.error:
            return f"{head} {arrow} UNDECODABLE ({ev.error}): {(ev.raw or '')[:120]}"
        if ev.message is not None:
            body = {k: v for k, v in ev.message.items() if k != "type"}
            return f"{head} {arrow} {ev.type:<22} {str(body)[:160]}"
        return f"{head} {arrow} [{ev.opcode}] {ev.detail}"
    if ev.kind == NOTE:
        d = dict(ev.detail)
        return f"{head} .. {d.pop('what', '')} {d if d else ''}".rstrip()
    return f"{head} == {ev.kind} {ev.detail}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iii-fake-engine", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=49134, help="port (default 49134, 0 = ephemeral)")
    p.add_argument("--transcript", metavar="FILE", help="write every event as JSON Lines here")
    p.add_argument("--quiet", action="store_true", help="no live log on stdout")
    p.add_argument(
        "--handshake",
        default="accept",
        type=hs.parse,
        help="accept | refuse[:STATUS] | close-before-upgrade | stall[:S] | "
        "close-after-open[:CODE] | abort-after-open",
    )
    p.add_argument(
        "--no-workerregistered", action="store_true", help="do not send workerregistered on accept"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    return p


async def serve(args: argparse.Namespace, out: TextIO) -> int:
    t0 = time.monotonic_ns()
    sink = open(args.transcript, "w", encoding="utf-8") if args.transcript else None  # noqa: ASYNC230

    def live(ev: Event) -> None:
        out.write(format_event(ev, t0) + "\n")
        out.flush()

    try:
        engine = FakeEngine(
            host=args.host,
            port=args.port,
            transcript_sink=sink,
            live=None if args.quiet else live,
            send_workerregistered=not args.no_workerregistered,
        )
        engine.handshake = args.handshake
        try:
            await engine.start()
        except EngineStartError as exc:
            print(f"iii-fake-engine: {exc}", file=sys.stderr)
            return 2
        print(f"iii-fake-engine listening on {engine.url}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        await engine.stop()
        return 0
    finally:
        if sink is not None:
            sink.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(serve(args, sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
