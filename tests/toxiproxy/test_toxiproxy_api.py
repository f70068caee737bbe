"""HTTP API conformance (anchors §2.2 and the API half of the §2.4 checklist)."""

from __future__ import annotations

import json
import socket

import pytest
import requests
from conftest import Target
from tp_helpers import Upstream, connect, port_refuses, roundtrip_ms

T = 10.0  # request timeout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(tp: Target, method: str, path: str, body: object = None, **kw: object) -> requests.Response:
    data = None if body is None else json.dumps(body)
    return requests.request(method, tp.url + path, data=data, timeout=T, **kw)


def assert_error(resp: requests.Response, status: int, message: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    # Go's http.Error: JSON text served as text/plain with a trailing newline.
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.text.endswith("\n")
    body = json.loads(resp.text)
    assert body["status"] == status
    if message is not None:
        assert body["error"] == message


def create(
    tp: Target, name: str, upstream: str, listen: str = "127.0.0.1:0", **extra: object
) -> dict:
    resp = api(
        tp, "POST", "/proxies", {"name": name, "upstream": upstream, "listen": listen, **extra}
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    return resp.json()


# -- proxies -----------------------------------------------------------------------------
def test_create_validation_and_conflicts(tp: Target, echo: Upstream) -> None:
    assert_error(
        api(tp, "POST", "/proxies", {"name": "", "upstream": echo.addr}),
        400,
        "missing required field: name",
    )
    assert_error(
        api(tp, "POST", "/proxies", {"name": "a", "upstream": ""}),
        400,
        "missing required field: upstream",
    )
    assert_error(api(tp, "POST", "/proxies", None), 400)  # empty body: "bad request body: EOF"
    assert_error(api(tp, "POST", "/proxies", {"name": 5, "upstream": echo.addr}), 400)
    first = create(tp, "a", echo.addr)
    assert first == {
        "name": "a",
        "listen": first["listen"],
        "upstream": echo.addr,
        "enabled": True,
        "toxics": [],
    }
    assert_error(
        api(tp, "POST", "/proxies", {"name": "a", "upstream": echo.addr}),
        409,
        "proxy already exists",
    )
    # Same port twice: 500 with the bind error; succeeds once the first is deleted.
    resp = api(
        tp, "POST", "/proxies", {"name": "b", "upstream": echo.addr, "listen": first["listen"]}
    )
    assert_error(resp, 500)
    assert "address already in use" in resp.json()["error"]
    assert api(tp, "DELETE", "/proxies/a").status_code == 204
    assert_error(api(tp, "DELETE", "/proxies/a"), 404, "proxy not found")
    assert create(tp, "b", echo.addr, first["listen"])["listen"] == first["listen"]


def test_ignores_toxics_field_and_unknown_keys(tp: Target, echo: Upstream) -> None:
    body = {
        "name": "a",
        "upstream": echo.addr,
        "listen": "127.0.0.1:0",
        "toxics": [{"type": "latency"}],
        "bogus": 1,
    }
    resp = api(tp, "POST", "/proxies", body)
    assert resp.status_code == 201
    assert resp.json()["toxics"] == []


def test_localhost_resolved_when_enabled_and_kept_when_disabled(tp: Target, echo: Upstream) -> None:
    port = free_port()
    enabled = create(tp, "on", echo.addr, f"localhost:{port}")
    assert enabled["listen"] == f"127.0.0.1:{port}"
    assert tp.client.proxies()["on"].listen == f"127.0.0.1:{port}"
    port2 = free_port()
    disabled = create(tp, "off", echo.addr, f"localhost:{port2}", enabled=False)
    assert disabled["listen"] == f"localhost:{port2}" and disabled["enabled"] is False
    assert port_refuses(f"127.0.0.1:{port2}")


def test_toggle_enabled_and_partial_update(tp: Target, echo: Upstream) -> None:
    proxy = create(tp, "a", echo.addr)
    listen = proxy["listen"]
    resp = api(tp, "PATCH", "/proxies/a", {"enabled": False})
    assert resp.status_code == 200 and resp.json()["enabled"] is False
    assert resp.json()["upstream"] == echo.addr  # omitted fields keep their values
    assert port_refuses(listen)
    resp = api(tp, "POST", "/proxies/a", {"enabled": True})  # deprecated POST still works
    assert resp.status_code == 200 and resp.json()["enabled"] is True
    sock = connect(resp.json()["listen"])
    assert roundtrip_ms(sock) < 1000
    sock.close()
    assert_error(api(tp, "PATCH", "/proxies/missing", {"enabled": True}), 404, "proxy not found")
    assert_error(api(tp, "PATCH", "/proxies/a", {"enabled": "yes"}), 400)


def test_update_listen_moves_port_and_same_address_keeps_connections(
    tp: Target, echo: Upstream
) -> None:
    proxy = create(tp, "a", echo.addr)
    old = proxy["listen"]
    sock = connect(old)
    assert roundtrip_ms(sock) < 1000
    port = old.rsplit(":", 1)[1]
    # Same port spelled with a hostname: existing connections survive.
    same = api(tp, "PATCH", "/proxies/a", {"listen": f"localhost:{port}"}).json()
    assert same["listen"].endswith(f":{port}")
    assert roundtrip_ms(sock) < 1000
    moved = api(tp, "PATCH", "/proxies/a", {"listen": "127.0.0.1:0"}).json()
    assert moved["listen"] != old and moved["enabled"] is True
    assert port_refuses(old)
    new_sock = connect(moved["listen"])
    assert roundtrip_ms(new_sock) < 1000
    new_sock.close()
    sock.close()


def test_listing_and_show(tp: Target, echo: Upstream) -> None:
    create(tp, "b", echo.addr)
    create(tp, "a", echo.addr)
    listing = api(tp, "GET", "/proxies")
    assert listing.status_code == 200 and listing.headers["Content-Type"] == "application/json"
    assert sorted(listing.json()) == ["a", "b"]
    show = api(tp, "GET", "/proxies/a").json()
    assert show == listing.json()["a"]
    assert_error(api(tp, "GET", "/proxies/nope"), 404, "proxy not found")


def test_down_upstream_is_accept_then_eof(tp: Target) -> None:
    proxy = create(tp, "dead", f"127.0.0.1:{free_port()}")
    sock = connect(proxy["listen"])
    sock.settimeout(5)
    assert sock.recv(10) == b""  # accepted, then closed: not ECONNREFUSED
    sock.close()


# -- populate ------------------------------------------------------------------------------
def test_populate_defaults_and_disabled(tp: Target, echo: Upstream) -> None:
    port = free_port()
    resp = api(
        tp,
        "POST",
        "/populate",
        [
            {"name": "one", "upstream": echo.addr, "listen": "127.0.0.1:0"},
            {"name": "two", "upstream": echo.addr, "listen": f"127.0.0.1:{port}", "enabled": False},
        ],
    )
    assert resp.status_code == 201 and resp.headers["Content-Type"] == "application/json"
    proxies = {p["name"]: p for p in resp.json()["proxies"]}
    assert proxies["one"]["enabled"] is True and proxies["two"]["enabled"] is False
    assert port_refuses(f"127.0.0.1:{port}")


def test_populate_keeps_identical_proxy_with_toxics(tp: Target, echo: Upstream) -> None:
    port = free_port()
    create(tp, "keep", echo.addr, f"127.0.0.1:{port}")
    tp.client.get_proxy("keep").add_toxic(type="latency", attributes={"latency": 5})
    # Hostname vs IP for the same address counts as identical (toxiproxy #631).
    resp = api(
        tp,
        "POST",
        "/populate",
        [{"name": "keep", "upstream": echo.addr, "listen": f"localhost:{port}"}],
    )
    assert resp.status_code == 201
    assert [t["name"] for t in resp.json()["proxies"][0]["toxics"]] == ["latency_downstream"]


def test_populate_validates_everything_first(tp: Target, echo: Upstream) -> None:
    resp = api(
        tp,
        "POST",
        "/populate",
        [{"name": "ok", "upstream": echo.addr}, {"name": "", "upstream": echo.addr}],
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "missing required field: name at proxy 2"
    assert resp.json()["status"] == 400
    assert tp.client.proxies() == {}


def test_populate_stops_at_first_bind_error_keeping_earlier(tp: Target, echo: Upstream) -> None:
    blocker = create(tp, "blocker", echo.addr)
    resp = api(
        tp,
        "POST",
        "/populate",
        [
            {"name": "first", "upstream": echo.addr, "listen": "127.0.0.1:0"},
            {"name": "second", "upstream": echo.addr, "listen": blocker["listen"]},
        ],
    )
    assert resp.status_code == 500
    assert "address already in use" in resp.json()["error"]
    assert set(tp.client.proxies()) == {"blocker", "first"}


# -- reset ---------------------------------------------------------------------------------
def test_reset_reenables_and_clears_toxics(tp: Target, echo: Upstream) -> None:
    proxy = create(tp, "a", echo.addr)
    api(tp, "POST", "/proxies/a/toxics", {"type": "latency", "attributes": {"latency": 1}})
    api(tp, "PATCH", "/proxies/a", {"enabled": False})
    resp = api(tp, "POST", "/reset")
    assert resp.status_code == 204 and resp.content == b""
    after = api(tp, "GET", "/proxies/a").json()
    assert after["enabled"] is True and after["toxics"] == []
    sock = connect(after["listen"])
    assert after["listen"] == proxy["listen"] and roundtrip_ms(sock) < 1000
    sock.close()


# -- toxics --------------------------------------------------------------------------------
def test_toxic_create_defaults_and_names(tp: Target, echo: Upstream) -> None:
    create(tp, "a", echo.addr)
    resp = api(tp, "POST", "/proxies/a/toxics", {"type": "latency"})
    assert resp.status_code == 200  # not 201
    assert resp.json() == {
        "attributes": {"latency": 0, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    up = api(tp, "POST", "/proxies/a/toxics", {"type": "latency", "stream": "upstream"}).json()
    assert up["name"] == "latency_upstream"
    named = api(
        tp, "POST", "/proxies/a/toxics", {"type": "latency", "name": "second", "toxicity": 0.2}
    ).json()
    assert named["toxicity"] == 0.2 and named["stream"] == "downstream"
    zero = api(tp, "POST", "/proxies/a/toxics", {"type": "noop", "name": "z", "toxicity": 0}).json()
    assert zero["toxicity"] == 0  # explicit 0 is kept, not defaulted
    listing = api(tp, "GET", "/proxies/a/toxics").json()
    assert [t["name"] for t in listing] == ["latency_upstream", "latency_downstream", "second", "z"]
    assert api(tp, "GET", "/proxies/a/toxics/second").json() == named


def test_toxic_conflicts_and_errors(tp: Target, echo: Upstream) -> None:
    create(tp, "a", echo.addr)
    api(tp, "POST", "/proxies/a/toxics", {"type": "latency", "name": "t"})
    assert_error(
        api(tp, "POST", "/proxies/a/toxics", {"type": "bandwidth", "name": "t"}),
        409,
        "toxic already exists",
    )
    assert_error(
        api(
            tp, "POST", "/proxies/a/toxics", {"type": "latency", "name": "t", "stream": "upstream"}
        ),
        409,
        "toxic already exists",
    )
    assert_error(
        api(tp, "POST", "/proxies/a/toxics", {"type": "latency", "stream": "walrustream"}),
        400,
        "stream was invalid, can be either upstream or downstream",
    )
    assert_error(
        api(tp, "POST", "/proxies/a/toxics", {"type": "walrus"}), 400, "invalid toxic type"
    )
    assert_error(
        api(
            tp,
            "POST",
            "/proxies/a/toxics",
            {"type": "latency", "name": "f", "attributes": {"latency": 1.5}},
        ),
        400,
    )
    assert_error(
        api(tp, "POST", "/proxies/nope/toxics", {"type": "latency"}), 404, "proxy not found"
    )
    assert_error(api(tp, "GET", "/proxies/a/toxics/nope"), 404, "toxic not found")
    assert_error(api(tp, "PATCH", "/proxies/a/toxics/nope", {}), 404, "toxic not found")
    assert api(tp, "DELETE", "/proxies/a/toxics/t").status_code == 204
    assert_error(api(tp, "DELETE", "/proxies/a/toxics/t"), 404, "toxic not found")


def test_stream_is_case_insensitive_and_echoed(tp: Target, echo: Upstream) -> None:
    create(tp, "a", echo.addr)
    toxic = api(
        tp, "POST", "/proxies/a/toxics", {"type": "noop", "name": "n", "stream": "UpStream"}
    ).json()
    assert toxic["stream"] == "UpStream"


def test_toxic_partial_update(tp: Target, echo: Upstream) -> None:
    create(tp, "a", echo.addr)
    api(
        tp,
        "POST",
        "/proxies/a/toxics",
        {"type": "latency", "toxicity": 0.5, "attributes": {"latency": 100, "jitter": 10}},
    )
    resp = api(
        tp, "PATCH", "/proxies/a/toxics/latency_downstream", {"attributes": {"latency": 200}}
    )
    assert resp.status_code == 200
    assert resp.json()["attributes"] == {"latency": 200, "jitter": 10}
    assert resp.json()["toxicity"] == 0.5  # unspecified toxicity is kept
    resp = api(
        tp,
        "POST",
        "/proxies/a/toxics/latency_downstream",
        {"toxicity": 1, "type": "bandwidth", "stream": "upstream"},
    )
    assert (
        resp.json()["toxicity"] == 1 and resp.json()["type"] == "latency"
    )  # type/stream immutable
    assert resp.json()["stream"] == "downstream"
    assert_error(
        api(tp, "PATCH", "/proxies/a/toxics/latency_downstream", {"attributes": {"jitter": "x"}}),
        400,
    )


# -- misc ----------------------------------------------------------------------------------
def test_version(tp: Target) -> None:
    resp = api(tp, "GET", "/version")
    assert resp.status_code == 200
    assert resp.text.endswith("}\n")
    assert isinstance(json.loads(resp.text)["version"], str)
    assert tp.client.version() == json.loads(resp.text)["version"]


def test_browsers_are_forbidden(tp: Target) -> None:
    resp = api(tp, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert resp.status_code == 403
    assert resp.text == "User agent not allowed\n"


def test_unknown_route_and_method(tp: Target) -> None:
    assert api(tp, "GET", "/nope").status_code == 404
    assert api(tp, "PUT", "/proxies").status_code == 405


def test_request_id_header(tp: Target) -> None:
    assert api(tp, "GET", "/proxies").headers.get("X-Toxiproxy-Request-Id")


@pytest.mark.parametrize("body", [[], None])
def test_populate_empty(tp: Target, body: object) -> None:
    resp = api(tp, "POST", "/populate", body if body is not None else [])
    assert resp.status_code == 201 and resp.json() == {"proxies": None}  # Go marshals a nil slice
