"""toxiproxy 2.x's HTTP API (api.go ``Routes``): routing, status codes and error bodies."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from . import decode
from .collection import ProxyCollection, parse_proxy_fields
from .errors import TOXIC_NOT_FOUND, ApiError
from .http import Request, Response
from .metrics import render_metrics

JSON = [("Content-Type", "application/json")]
_XID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"

Route = Callable[..., Awaitable[Response]]


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, decode.go_json(value).encode(), list(JSON))


def error_response(err: ApiError) -> Response:
    """Go's ``http.Error``: JSON text, but served as text/plain with a trailing newline."""
    body = (decode.go_json(err.to_json()) + "\n").encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")]
    return Response(err.status, body, headers)


def _request_id() -> str:
    return "".join(secrets.choice(_XID_ALPHABET) for _ in range(20))


class ApiServer:
    def __init__(self, collection: ProxyCollection, version: str, metrics: bool = False) -> None:
        self.collection = collection
        self.version = version
        self.metrics = metrics
        seg = r"([^/]+)"
        self._routes: list[tuple[re.Pattern[str], dict[str, Route]]] = [
            (re.compile(r"/reset"), {"POST": self.reset}),
            (re.compile(r"/proxies"), {"GET": self.proxy_index, "POST": self.proxy_create}),
            (re.compile(r"/populate"), {"POST": self.populate}),
            (
                re.compile(rf"/proxies/{seg}"),
                {
                    "GET": self.proxy_show,
                    "POST": self.proxy_update,
                    "PATCH": self.proxy_update,
                    "DELETE": self.proxy_delete,
                },
            ),
            (
                re.compile(rf"/proxies/{seg}/toxics"),
                {"GET": self.toxic_index, "POST": self.toxic_create},
            ),
            (
                re.compile(rf"/proxies/{seg}/toxics/{seg}"),
                {
                    "GET": self.toxic_show,
                    "POST": self.toxic_update,
                    "PATCH": self.toxic_update,
                    "DELETE": self.toxic_delete,
                },
            ),
            (re.compile(r"/version"), {"GET": self.version_show}),
        ]
        if metrics:
            self._routes.append((re.compile(r"/metrics"), {"GET": self.metrics_show}))

    async def handle(self, request: Request) -> Response:
        matched_path = False
        for pattern, methods in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            matched_path = True
            route = methods.get(request.method)
            if route is None:
                continue
            # Middleware runs only on matched routes (gorilla/mux), so 404/405 skip it.
            if request.headers.get("user-agent", "").startswith("Mozilla/"):
                resp = Response(
                    403,
                    b"User agent not allowed\n",
                    [
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("X-Content-Type-Options", "nosniff"),
                    ],
                )
            else:
                try:
                    resp = await route(request, *match.groups())
                except ApiError as err:
                    resp = error_response(err)
            resp.headers.append(("X-Toxiproxy-Request-Id", _request_id()))
            return resp
        if matched_path:
            return Response(405)
        return Response(
            404,
            b"404 page not found\n",
            [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")],
        )

    # -- proxies ---------------------------------------------------------------------
    async def proxy_index(self, request: Request) -> Response:
        proxies = self.collection.proxies
        return json_response({name: proxies[name].to_json() for name in sorted(proxies)})

    async def proxy_create(self, request: Request) -> Response:
        proxy = await self.collection.create(decode.parse_body(request.body))
        return json_response(proxy.to_json(), 201)

    async def populate(self, request: Request) -> Response:
        try:
            proxies = await self.collection.populate(decode.parse_body(request.body))
        except ApiError as err:
            # Written with json.Marshal, not http.Error: application/json, no newline.
            return json_response({**err.to_json(), "proxies": None}, err.status)
        return json_response({"proxies": [p.to_json() for p in proxies] or None}, 201)

    async def proxy_show(self, request: Request, name: str) -> Response:
        return json_response(self.collection.get(name).to_json())

    async def proxy_update(self, request: Request, name: str) -> Response:
        proxy = self.collection.get(name)
        body = decode.expect_object(decode.parse_body(request.body), "toxiproxy.Proxy")
        base = {
            "name": proxy.name,
            "listen": proxy.listen,
            "upstream": proxy.upstream,
            "enabled": proxy.enabled,
        }
        fields = parse_proxy_fields(body, base)
        async with self.collection.lock:
            await proxy.update(fields["listen"], fields["upstream"], fields["enabled"])
        return json_response(proxy.to_json())

    async def proxy_delete(self, request: Request, name: str) -> Response:
        await self.collection.remove(name)
        return Response(204)

    async def reset(self, request: Request) -> Response:
        async with self.collection.lock:
            proxies = list(self.collection.proxies.values())
            for proxy in proxies:
                await proxy.start()
        for proxy in proxies:
            await proxy.toxics.reset()
        return Response(204)

    # -- toxics ----------------------------------------------------------------------
    async def toxic_index(self, request: Request, name: str) -> Response:
        return json_response(self.collection.get(name).toxics.to_json())

    async def toxic_create(self, request: Request, name: str) -> Response:
        proxy = self.collection.get(name)
        spec = await proxy.toxics.add(decode.parse_body(request.body))
        return json_response(spec.to_json())  # 200, not 201: toxiproxy's quirk

    async def toxic_show(self, request: Request, name: str, toxic: str) -> Response:
        spec = self.collection.get(name).toxics.find(toxic)
        if spec is None:
            raise TOXIC_NOT_FOUND
        return json_response(spec.to_json())

    async def toxic_update(self, request: Request, name: str, toxic: str) -> Response:
        proxy = self.collection.get(name)
        spec = await proxy.toxics.update(toxic, decode.parse_body(request.body))
        return json_response(spec.to_json())

    async def toxic_delete(self, request: Request, name: str, toxic: str) -> Response:
        await self.collection.get(name).toxics.remove(toxic)
        return Response(204)

    # -- misc ------------------------------------------------------------------------
    async def version_show(self, request: Request) -> Response:
        body = f'{{"version": "{self.version}"}}\n'.encode()
        return Response(200, body, [("Content-Type", "application/json;charset=utf-8")])

    async def metrics_show(self, request: Request) -> Response:
        text = render_metrics(self.collection)
        return Response(
            200, text.encode(), [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")]
        )
