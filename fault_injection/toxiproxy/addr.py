"""Listen-address parsing and normalisation.

Only IP literals and ``localhost`` are accepted for ``listen`` (no DNS lookups, so
fuzzed names never leave the machine); an empty host binds loopback rather than
every interface, a deliberate deviation from toxiproxy for a test harness.
"""

from __future__ import annotations

import ipaddress
import socket

from .errors import ApiError, internal


def split_host_port(addr: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort`` for the forms toxiproxy users write."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise internal(f"listen tcp: address {addr}: missing ']' in address")
        host, rest = addr[1:end], addr[end + 1 :]
        if not rest.startswith(":"):
            raise internal(f"listen tcp: address {addr}: missing port in address")
        return host, rest[1:]
    if ":" not in addr:
        raise internal(f"listen tcp: address {addr}: missing port in address")
    host, port = addr.rsplit(":", 1)
    if ":" in host:
        raise internal(f"listen tcp: address {addr}: too many colons in address")
    return host, port


def resolve_listen(listen: str) -> tuple[socket.AddressFamily, str, int]:
    """Turn ``host:port`` into ``(family, ip, port)`` or raise a 500 like Go's Listen."""
    host, port_text = split_host_port(listen)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise internal(f"listen tcp: address {listen}: invalid port")
    port = int(port_text)
    if host in ("", "localhost"):
        return socket.AF_INET, "127.0.0.1", port
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise internal(f"listen tcp: lookup {host}: no such host") from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return family, str(ip), port


def format_addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def same_listen(current: str, requested: str) -> bool:
    """Hostname and IP spellings of one concrete address are equal; port 0 never is."""
    try:
        a = resolve_listen(current)
        b = resolve_listen(requested)
    except ApiError:
        return current == requested
    return a == b and b[2] != 0
