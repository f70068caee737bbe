"""The one way the harness talks to toxiproxy (embedded or real).

Wraps ``toxiproxy-python`` 0.1.1 where it falls short (anchors §2.6): a per-client
base URL (``TOXIPROXY_URL`` or explicit) instead of process-global host/port, request
timeouts, errors raised for 5xx/403 with the server's message, toxic update (PATCH),
server-side ``/populate``, and ``/version`` parsing across its three formats.
``Proxy`` and the exceptions subclass 0.1.1's, so code written against it keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import toxiproxy
import toxiproxy.exceptions as _tp_exc

DEFAULT_URL = "http://127.0.0.1:8474"
DEFAULT_TIMEOUT = 5.0


class ToxiproxyError(Exception):
    """An error answer from the toxiproxy API (``status`` and the server's ``message``)."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"toxiproxy {url}: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.url = url


class ProxyExists(ToxiproxyError, _tp_exc.ProxyExists):
    """409."""


class NotFound(ToxiproxyError, _tp_exc.NotFound):
    """404."""


class InvalidToxic(ToxiproxyError, _tp_exc.InvalidToxic):
    """400 (0.1.1 names every 400 this way)."""


class ToxiproxyServerError(ToxiproxyError):
    """5xx, 403 and anything else 0.1.1 silently let through."""


class ToxiproxyUnavailable(ToxiproxyError):
    """The server could not be reached (refused, timed out); names the URL."""

    def __init__(self, url: str, reason: str) -> None:
        ToxiproxyError.__init__(self, 0, reason, url)
        self.args = (f"toxiproxy at {url} is unreachable: {reason}",)

    def __str__(self) -> str:
        return self.args[0]


_ERRORS = {409: ProxyExists, 404: NotFound, 400: InvalidToxic}


def resolve_url(url: str | None = None) -> str:
    """Explicit URL, else ``TOXIPROXY_URL``, else toxiproxy's default; no trailing slash."""
    chosen = url or os.environ.get("TOXIPROXY_URL") or DEFAULT_URL
    if "://" not in chosen:
        chosen = "http://" + chosen
    parts = urlsplit(chosen)
    if not parts.hostname:
        raise ValueError(f"bad toxiproxy URL {chosen!r}")
    return chosen.rstrip("/")


def parse_version(body: bytes | str) -> str:
    """``{"version": "X"}`` (≥2.7), 2.6's broken JSON with a literal ``\\n``, or plain text (≤2.5)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    with contextlib.suppress(ValueError):
        value = json.loads(text)
        if isinstance(value, dict) and isinstance(value.get("version"), str):
            return value["version"]
    match = re.search(r'"version"\s*:\s*"([^"]*)"', text)
    if match:
        return match.group(1)
    return text.removesuffix("\\n").strip()


def version_tuple(version: str) -> tuple[int, ...]:
    """``"v2.12.0+x"`` → ``(2, 12, 0)``; unparseable (e.g. ``"git"``) → ``()``."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", version)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


class Toxiproxy(toxiproxy.Toxiproxy):
    """toxiproxy-python's ``Toxiproxy`` bound to one server URL, with the gaps filled."""

    def __init__(self, url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = resolve_url(url)
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "iii-conformance-toxiproxy-client"

    # -- transport -------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, expect_json: bool = True) -> Any:
        """Send one request; raise a ``ToxiproxyError`` subclass on any non-2xx answer."""
        url = self.url + path
        try:
            resp = self._session.request(
                method,
                url,
                data=None if body is None else json.dumps(body),
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ToxiproxyUnavailable(self.url, f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 300:
            message = resp.text.strip()
            with contextlib.suppress(ValueError):
                message = str(json.loads(message).get("error", message))
            raise _ERRORS.get(resp.status_code, ToxiproxyServerError)(
                resp.status_code, message, self.url
            )
        if not expect_json:
            return resp.content
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Toxiproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- 0.1.1 surface ----------------------------------------------------------------
    def proxies(self) -> dict[str, Proxy]:
        data = self.request("GET", "/proxies")
        return {name: Proxy(self, values) for name, values in data.items()}

    def get_proxy(self, proxy_name: str) -> Proxy | None:
        try:
            return Proxy(self, self.request("GET", f"/proxies/{_seg(proxy_name)}"))
        except NotFound:
            return None

    def running(self) -> bool:
        try:
            self.request("GET", "/version", expect_json=False)
        except ToxiproxyUnavailable:
            return False
        return True

    def version(self) -> str:  # 0.1.1 returned raw bytes; this returns the parsed version
        return parse_version(self.request("GET", "/version", expect_json=False))

    def reset(self) -> bool:
        self.request("POST", "/reset")
        return True

    def create(
        self, upstream: str, name: str, listen: str | None = None, enabled: bool | None = None
    ) -> Proxy:
        body: dict[str, Any] = {
            "name": name,
            "upstream": upstream,
            "listen": listen or "127.0.0.1:0",
        }
        if enabled is not None:
            body["enabled"] = enabled
        return Proxy(self, self.request("POST", "/proxies", body))

    def destroy(self, proxy: Proxy | str) -> bool:
        name = proxy if isinstance(proxy, str) else proxy.name
        self.request("DELETE", f"/proxies/{_seg(name)}")
        return True

    def destroy_all(self) -> None:
        for proxy in self.proxies().values():
            with contextlib.suppress(NotFound):
                self.destroy(proxy)

    def populate(self, proxies: list[dict[str, Any]]) -> list[Proxy]:
        """Server-side ``POST /populate`` (0.1.1 did this client-side and lost toxics)."""
        data = self.request("POST", "/populate", proxies)
        return [Proxy(self, p) for p in (data or {}).get("proxies") or []]

    def update_api_consumer(self, host: str, port: int) -> None:
        self.url = resolve_url(f"http://{host}:{port}")

    # -- additions --------------------------------------------------------------------
    def update_proxy(self, name: str, **fields: Any) -> Proxy:
        return Proxy(self, self.request("PATCH", f"/proxies/{_seg(name)}", fields))

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Poll ``/version`` until it answers; raise ``ToxiproxyUnavailable`` after ``timeout`` s."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/version", expect_json=False)
                return
            except ToxiproxyUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)


class Proxy(toxiproxy.Proxy):
    """toxiproxy-python's ``Proxy`` that talks through its client and returns toxics."""

    def __init__(self, client: Toxiproxy, values: dict[str, Any]) -> None:
        super().__init__(**values)
        self.client = client
        self.toxics_data: list[dict[str, Any]] = list(values.get("toxics") or [])

    @property
    def path(self) -> str:
        return f"/proxies/{_seg(self.name)}"

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def toxics(self) -> dict[str, toxiproxy.toxic.Toxic]:
        data = self.client.request("GET", f"{self.path}/toxics")
        return {t["name"]: toxiproxy.toxic.Toxic(**t) for t in data}

    def add_toxic(self, **kwargs: Any) -> dict[str, Any]:
        """Like 0.1.1 but omitted fields take the server's defaults and the toxic is returned."""
        body = {
            k: v
            for k, v in kwargs.items()
            if k in ("type", "stream", "name", "toxicity", "attributes")
        }
        return self.client.request("POST", f"{self.path}/toxics", body)

    def update_toxic(
        self, name: str, attributes: dict[str, Any] | None = None, toxicity: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = attributes
        if toxicity is not None:
            body["toxicity"] = toxicity
        return self.client.request("PATCH", f"{self.path}/toxics/{_seg(name)}", body)

    def destroy_toxic(self, toxic_name: str) -> bool:
        self.client.request("DELETE", f"{self.path}/toxics/{_seg(toxic_name)}")
        return True

    def destroy(self) -> bool:
        self.client.request("DELETE", self.path)
        return True

    def disable(self) -> None:
        self._set_enabled(False)

    def enable(self) -> None:
        self._set_enabled(True)

    def _set_enabled(self, enabled: bool) -> None:
        data = self.client.request("PATCH", self.path, {"enabled": enabled})
        self.enabled = data["enabled"]
        self.listen = data["listen"]

    def refresh(self) -> Proxy:
        data = self.client.request("GET", self.path)
        self.upstream, self.enabled, self.listen = data["upstream"], data["enabled"], data["listen"]
        self.toxics_data = list(data.get("toxics") or [])
        return self


def _seg(name: str) -> str:
    return quote(name, safe="")


@dataclass
class ToxiproxyHandle:
    """What ``toxiproxy_server`` yields: the URL, a client, and whether it is embedded."""

    url: str
    client: Toxiproxy
    embedded: bool

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) client method off the event loop."""
        return await asyncio.to_thread(getattr(self.client, method), *args, **kwargs)


@contextlib.contextmanager
def toxiproxy_server_sync(
    url: str | None = None, *, seed: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[ToxiproxyHandle]:
    """Use ``url``/``TOXIPROXY_URL`` if given (checked up front, reset on exit), else embed one."""
    chosen = url or os.environ.get("TOXIPROXY_URL")
    if chosen:
        client = Toxiproxy(chosen, timeout=timeout)
        client.wait_ready(timeout)
        try:
            yield ToxiproxyHandle(client.url, client, embedded=False)
        finally:
            with contextlib.suppress(ToxiproxyError):
                client.reset()
            client.close()
        return
    from fault_injection.toxiproxy import EmbeddedToxiproxy

    server = EmbeddedToxiproxy.start_in_thread(seed=seed, timeout=timeout)
    client = Toxiproxy(server.url, timeout=timeout)
    try:
        yield ToxiproxyHandle(server.url, client, embedded=True)
    finally:
        client.close()
        server.stop(timeout=max(timeout, 10.0))


@contextlib.asynccontextmanager
async def toxiproxy_server(
    url: str | None = None, *, seed: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> AsyncIterator[ToxiproxyHandle]:
    """Async form of ``toxiproxy_server_sync``.

    The embedded server runs in its own thread so the blocking client can be used from
    the test's loop (via ``handle.call``) without deadlocking on a shared loop.
    """
    cm = toxiproxy_server_sync(url, seed=seed, timeout=timeout)
    handle = await asyncio.to_thread(cm.__enter__)
    try:
        yield handle
    except BaseException as exc:
        if not await asyncio.to_thread(cm.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await asyncio.to_thread(cm.__exit__, None, None, None)
