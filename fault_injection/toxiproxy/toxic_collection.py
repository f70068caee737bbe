"""A proxy's toxics: the per-direction chains and their live application to links."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .errors import TOXIC_ALREADY_EXISTS, TOXIC_NOT_FOUND
from .link import Link
from .toxics import DIRECTIONS, ToxicSpec

if TYPE_CHECKING:
    from .proxy import Proxy


class ToxicCollection:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.chains: dict[str, list[ToxicSpec]] = {d: [] for d in DIRECTIONS}
        # Serialises edits: a removal awaits stubs, and nothing may interleave with it.
        self.lock = asyncio.Lock()

    def find(self, name: str) -> ToxicSpec | None:
        for direction in DIRECTIONS:
            for spec in self.chains[direction]:
                if spec.name == name:
                    return spec
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [spec.to_json() for d in DIRECTIONS for spec in self.chains[d]]

    def _links(self, direction: str) -> list[Link]:
        return [c.links[direction] for c in list(self.proxy.connections) if not c.closed]

    async def add(self, body: Any) -> ToxicSpec:
        spec = ToxicSpec.parse_create(body, exists=self.find)
        async with self.lock:
            if self.find(spec.name) is not None:
                raise TOXIC_ALREADY_EXISTS
            self.chains[spec.direction].append(spec)
            for link in self._links(spec.direction):
                link.add_toxic(spec)
        return spec

    async def update(self, name: str, body: Any) -> ToxicSpec:
        async with self.lock:
            current = self.find(name)
            if current is None:
                raise TOXIC_NOT_FOUND
            updated = current.parse_update(body)
            chain = self.chains[current.direction]
            chain[chain.index(current)] = updated
            await asyncio.gather(
                *(link.update_toxic(updated) for link in self._links(updated.direction))
            )
            return updated

    async def remove(self, name: str) -> None:
        async with self.lock:
            spec = self.find(name)
            if spec is None:
                raise TOXIC_NOT_FOUND
            await self._remove(spec)

    async def _remove(self, spec: ToxicSpec) -> None:
        self.chains[spec.direction].remove(spec)
        await asyncio.gather(*(link.remove_toxic(spec) for link in self._links(spec.direction)))

    async def reset(self) -> None:
        """Remove every toxic (a removed ``timeout`` still closes its connections)."""
        async with self.lock:
            for direction in DIRECTIONS:
                while self.chains[direction]:
                    await self._remove(self.chains[direction][0])
