"""Prometheus text for ``/metrics`` (toxiproxy's ``-proxy-metrics`` counters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .collection import ProxyCollection

_SERIES = (
    ("toxiproxy_proxy_received_bytes_total", 0, "The total bytes received"),
    ("toxiproxy_proxy_sent_bytes_total", 1, "The total bytes sent"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(collection: ProxyCollection) -> str:
    lines: list[str] = []
    for metric, index, help_text in _SERIES:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} counter")
        for name in sorted(collection.proxies):
            proxy = collection.proxies[name]
            for direction, counters in sorted(proxy.byte_counters.items()):
                labels = (
                    f'direction="{direction}",listener="{_escape(proxy.listen)}",'
                    f'proxy="{_escape(name)}",upstream="{_escape(proxy.upstream)}"'
                )
                lines.append(f"{metric}{{{labels}}} {counters[index]}")
    return "\n".join(lines) + "\n"
