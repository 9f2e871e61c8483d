"""allow / deny (policies/allow.py) with real clients over HTTP/1.1 and HTTP/2: 403 and
an error-log line for a refused address, nothing sent upstream; the real client after
trusted_proxies is what is matched; a route's list replaces its site's."""

from __future__ import annotations

import socket

from .h2client import H2Client
from .helpers import RawConn, free_port, wait_for_port

HOST = "app.test"


def config(up_url: str, tls: str = "off") -> str:
    return f"""
[[site]]
hosts = ["{HOST}"]
tls = "{tls}"
redirect_http = false
allow = ["127.0.0.0/30", "10.0.0.0/8", "::1"]
deny = ["127.0.0.2", "10.0.0.13"]
  [[site.route]]
  path = "/"
  proxy = "{up_url}"
  [[site.route]]
  path = "/public/"
  proxy = "{up_url}"
  allow = ["all"]
  deny = ["10.66.0.0/16"]
"""


def get_from(port: int, source: str, path: str, xff: str = "") -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    c = RawConn.__new__(RawConn)
    c.sock, c.buf, c.eof = sock, b"", False
    with c:
        extra = f"X-Forwarded-For: {xff}\r\n" if xff else ""
        c.send(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode())
        return c.read_response().status


def test_allow_and_deny_over_http1(porch, upstream):
    up = upstream()
    p = porch(config(up.url))
    assert get_from(p.port, "127.0.0.1", "/a") == 200
    assert get_from(p.port, "127.0.0.2", "/a") == 403  # in allow, but in deny: deny wins
    assert get_from(p.port, "127.0.0.5", "/a") == 403  # not in allow
    assert get_from(p.port, "127.0.0.5", "/public/a") == 200  # the route's own lists
    assert up.stats()["requests"] == 2
    log = p.error_log_text(wait_for="127.0.0.5 is not in allow")
    assert "access forbidden: client 127.0.0.2 is in deny" in log
    assert "access forbidden: client 127.0.0.5 is not in allow" in log


def test_the_real_client_behind_a_trusted_proxy_is_matched(porch, upstream):
    up = upstream()
    p = porch(config(up.url), trusted_proxies=["127.0.0.3/32"])
    assert get_from(p.port, "127.0.0.3", "/a", xff="10.1.2.3") == 200
    assert get_from(p.port, "127.0.0.3", "/a", xff="10.0.0.13") == 403
    assert get_from(p.port, "127.0.0.3", "/a", xff="192.0.2.1") == 403
    assert get_from(p.port, "127.0.0.3", "/public/a", xff="10.66.1.1") == 403
    assert get_from(p.port, "127.0.0.3", "/public/a", xff="::ffff:10.66.1.1") == 403  # mapped
    # an untrusted peer's X-Forwarded-For is not believed: its own address is matched
    assert get_from(p.port, "127.0.0.1", "/a", xff="10.0.0.13") == 200


def test_allow_and_deny_over_http2(porch, upstream):
    up = upstream()
    https_port = free_port()
    p = porch(config(up.url, tls="internal").replace('"127.0.0.0/30", ', ""), https_port=https_port,
              tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")
    with H2Client(https_port, HOST) as h2:
        refused = h2.get("/a")
        assert refused.status == 403 and b"Forbidden" in bytes(refused.data)
        assert h2.get("/public/a").status == 200  # the connection goes on
    assert up.stats()["requests"] == 1
    assert "access forbidden: client 127.0.0.1 is not in allow" in p.error_log_text(wait_for="not in allow")
