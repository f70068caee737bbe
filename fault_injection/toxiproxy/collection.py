"""The set of proxies, with toxiproxy's add / replace / populate rules."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from . import decode
from .errors import MISSING_FIELD, PROXY_ALREADY_EXISTS, PROXY_NOT_FOUND, ApiError
from .proxy import Proxy


class PopulateError(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def parse_proxy_fields(obj: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Decode ``name/listen/upstream/enabled`` over ``base`` (Go fills a struct in place)."""
    out = dict(base)
    for key, conv in (
        ("name", decode.as_string),
        ("listen", decode.as_string),
        ("upstream", decode.as_string),
        ("enabled", decode.as_bool),
    ):
        value = decode.field(obj, key)
        if not decode.is_missing(value):
            out[key] = conv(value, f"Proxy.{key}")
    return out


class ProxyCollection:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    def new_proxy(self, name: str, listen: str, upstream: str) -> Proxy:
        return Proxy(name, listen, upstream, self.rng)

    async def create(self, body: Any) -> Proxy:
        obj = decode.expect_object(body, "toxiproxy.Proxy")
        fields = parse_proxy_fields(
            obj, {"name": "", "listen": "", "upstream": "", "enabled": True}
        )
        if not fields["name"]:
            raise MISSING_FIELD.joined("name")
        if not fields["upstream"]:
            raise MISSING_FIELD.joined("upstream")
        async with self.lock:
            if fields["name"] in self.proxies:
                raise PROXY_ALREADY_EXISTS
            proxy = self.new_proxy(fields["name"], fields["listen"], fields["upstream"])
            if fields["enabled"]:
                await proxy.start()
            self.proxies[proxy.name] = proxy
            return proxy

    async def populate(self, body: Any) -> list[Proxy]:
        """Validate every entry first; then add-or-replace in order, stopping at the first error."""
        if body is None:
            body = []
        if not isinstance(body, list):
            raise decode.type_error(body, "value", "[]struct { toxiproxy.Proxy; Enabled *bool }")
        entries = []
        for i, item in enumerate(body, start=1):
            if item is not None and not isinstance(item, dict):
                raise decode.type_error(item, "value", "struct { toxiproxy.Proxy; Enabled *bool }")
            fields = parse_proxy_fields(
                item or {}, {"name": "", "listen": "", "upstream": "", "enabled": True}
            )
            if not fields["name"]:
                raise MISSING_FIELD.joined(f"name at proxy {i}")
            if not fields["upstream"]:
                raise MISSING_FIELD.joined(f"upstream at proxy {i}")
            entries.append(fields)
        result: list[Proxy] = []
        async with self.lock:
            for fields in entries:
                candidate = self.new_proxy(fields["name"], fields["listen"], fields["upstream"])
                result.append(await self._add_or_replace(candidate, fields["enabled"]))
        return result

    async def _add_or_replace(self, proxy: Proxy, start: bool) -> Proxy:
        existing = self.proxies.get(proxy.name)
        if existing is not None:
            if not existing.differs(proxy):
                return existing  # kept with its toxics and connections
            await existing.close()
        if start:
            await proxy.start()
        self.proxies[proxy.name] = proxy
        return proxy

    async def remove(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            del self.proxies[name]
        await proxy.close()

    async def clear(self) -> None:
        async with self.lock:
            proxies = list(self.proxies.values())
            self.proxies.clear()
        await asyncio.gather(*(p.close() for p in proxies), return_exceptions=True)
