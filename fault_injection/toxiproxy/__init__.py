"""Embedded toxiproxy-compatible server (toxiproxy 2.x HTTP API and toxics, plus ``half_open``).

Layout mirrors toxiproxy: ``api`` (routes) → ``collection``/``proxy`` (listeners) →
``connection``/``link`` (per-direction chains) → ``stub``/``toxics`` (behaviour).
"""

from .server import VERSION, EmbeddedToxiproxy, ThreadedToxiproxy

__all__ = ["VERSION", "EmbeddedToxiproxy", "ThreadedToxiproxy"]
