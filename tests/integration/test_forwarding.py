"""Forwarding headers: X-Forwarded-*, X-Real-IP, trusted proxies, hop-by-hop, identity headers."""

from __future__ import annotations

from .helpers import RawConn

FORWARDING = ["X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto", "X-Forwarded-Host",
              "X-Forwarded-Port"]


def site(up_url: str) -> str:
    return f'[[site]]\nhosts = ["app.test"]\nproxy = "{up_url}"\n'


def upstream_view(port: int, extra_headers: str = "", path: str = "/fwd") -> dict:
    """Send one GET with `extra_headers` (raw lines) and return what the echo upstream saw."""
    with RawConn(port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: app.test:{port}\r\n{extra_headers}\r\n".encode())
        r = c.read_response()
    assert r.status == 200, r.body[:300]
    return r.json()


def values(doc: dict, name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def test_forwarding_headers_set_for_direct_client(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    doc = upstream_view(p.port)
    assert values(doc, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(doc, "X-Real-IP") == ["127.0.0.1"]
    assert values(doc, "X-Forwarded-Proto") == ["http"]
    assert values(doc, "X-Forwarded-Host") in (["app.test"], [f"app.test:{p.port}"])
    assert values(doc, "X-Forwarded-Port") == [str(p.port)]


def test_forwarding_headers_from_untrusted_client_replaced(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    forged = ("X-Forwarded-For: 6.6.6.6\r\n"
              "x-forwarded-for: 7.7.7.7, 8.8.8.8\r\n"
              "X-Real-IP: 6.6.6.6\r\n"
              "X-Forwarded-Proto: https\r\n"
              "X-Forwarded-Host: evil.example\r\n"
              "X-Forwarded-Port: 443\r\n")
    doc = upstream_view(p.port, forged)
    assert values(doc, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(doc, "X-Real-IP") == ["127.0.0.1"]
    assert values(doc, "X-Forwarded-Proto") == ["http"]
    assert values(doc, "X-Forwarded-Host") in (["app.test"], [f"app.test:{p.port}"])
    assert values(doc, "X-Forwarded-Port") == [str(p.port)]


def test_trusted_proxy_x_forwarded_for_appended(upstream, porch):
    up = upstream()
    p = porch(site(up.url), trusted_proxies=["127.0.0.1/32"])
    doc = upstream_view(p.port, "X-Forwarded-For: 203.0.113.7\r\n")
    assert values(doc, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert values(doc, "X-Real-IP") == ["203.0.113.7"]


def test_trusted_proxy_forwarded_proto_kept(upstream, porch):
    """A TLS-terminating proxy in front says the client used https: the app must hear it."""
    up = upstream()
    p = porch(site(up.url), trusted_proxies=["127.0.0.1/32"])
    doc = upstream_view(p.port, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
    assert values(doc, "X-Forwarded-Proto") == ["https"]


def test_real_ip_is_rightmost_untrusted_address(upstream, porch):
    up = upstream()
    p = porch(site(up.url), trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"])
    doc = upstream_view(p.port, "X-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n")
    assert values(doc, "X-Real-IP") == ["203.0.113.7"]
    assert values(doc, "X-Forwarded-For") == ["203.0.113.7, 10.0.0.2, 127.0.0.1"]
    # A client can put anything on the left; the right-most untrusted hop is who connected.
    doc = upstream_view(p.port, "X-Forwarded-For: 198.51.100.9, 203.0.113.7, 10.0.0.2\r\n")
    assert values(doc, "X-Real-IP") == ["203.0.113.7"]


def test_hop_by_hop_request_headers_removed(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    hop = ("Connection: keep-alive, X-Hop-Named\r\n"
           "X-Hop-Named: secret\r\n"
           "Keep-Alive: timeout=5, max=100\r\n"
           "Proxy-Connection: keep-alive\r\n"
           "TE: trailers, deflate\r\n"
           "Trailer: X-Checksum\r\n"
           "Upgrade: h2c\r\n"
           "X-End-To-End: kept\r\n")
    doc = upstream_view(p.port, hop)
    names = {k.lower() for k, _ in doc["headers"]}
    for gone in ("x-hop-named", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
        assert gone not in names, f"{gone} reached the upstream: {doc['headers']}"
    for v in values(doc, "Connection"):
        assert "x-hop-named" not in v.lower()
    assert values(doc, "X-End-To-End") == ["kept"]


def test_hop_by_hop_response_headers_removed(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    path = ("/resp?h=Connection:X-Up-Hop&h=X-Up-Hop:secret&h=Keep-Alive:timeout%3D9"
            "&h=X-Up-End:kept")
    with RawConn(p.port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
        r = c.read_response()
    assert r.status == 200
    assert r.header("X-Up-Hop") is None
    assert r.header("Keep-Alive") is None
    assert all("x-up-hop" not in v.lower() for v in r.header_all("Connection"))
    assert r.header("X-Up-End") == "kept"


def test_remote_user_from_client_never_reaches_upstream(upstream, porch):
    up = upstream()
    # Even from a trusted proxy: identity headers from clients are always dropped.
    p = porch(site(up.url), trusted_proxies=["127.0.0.1/32"])
    doc = upstream_view(p.port, "X-Remote-User: admin\r\nx-remote-user: root\r\n")
    assert values(doc, "X-Remote-User") == []
