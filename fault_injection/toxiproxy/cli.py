"""``iii-toxiproxy``: toxiproxy-server's flags (``-host``, ``-port``, ``-config``, ``-seed``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .errors import ApiError
from .server import VERSION, EmbeddedToxiproxy

log = logging.getLogger("iii-toxiproxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iii-toxiproxy",
        description="Embedded toxiproxy-compatible server (loopback by default).",
    )
    parser.add_argument("-host", "--host", default="127.0.0.1", help="API host (default 127.0.0.1)")
    parser.add_argument("-port", "--port", type=int, default=8474, help="API port (default 8474)")
    parser.add_argument(
        "-config", "--config", default="", help="JSON file of proxies, like /populate"
    )
    parser.add_argument("-seed", "--seed", type=int, default=None, help="seed for all randomness")
    parser.add_argument(
        "-proxy-metrics", "--proxy-metrics", action="store_true", help="serve /metrics"
    )
    parser.add_argument(
        "-runtime-metrics", "--runtime-metrics", action="store_true", help="serve /metrics"
    )
    parser.add_argument("-version", "--version", action="version", version=VERSION)
    return parser


async def serve(args: argparse.Namespace) -> int:
    server = EmbeddedToxiproxy(
        args.host, args.port, args.seed, metrics=args.proxy_metrics or args.runtime_metrics
    )
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.config:
            try:
                proxies = await server.populate_file(args.config)
                log.info("populated %d proxies from %s", len(proxies), args.config)
            except (OSError, ApiError) as exc:
                log.error("failed to populate proxies from %s: %s", args.config, exc)
        log.info("toxiproxy API listening on %s (version %s)", server.url, VERSION)
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.wait_for(server.stop(), 15.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
