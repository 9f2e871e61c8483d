"""Connection lifecycle defects of issue 11 (items 4, 11, 17, 18, 19), each sent as the
reproduction over real sockets: HTTP/2 request lines that are not one, raw control
bytes in the error log, memory held by closed TLS connections, tracebacks when wss
tunnels close on reload, and what a drain that runs out logs.

Real processes: Porch (a local-CA or test-CA HTTPS site), the echo upstream
(upstreams.py), the `websockets` upstream (ws_upstream.py); raw h2 frames through
h2client.py, raw TLS sockets, `websockets` clients.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time

import pytest
from websockets.exceptions import ConnectionClosed

from .h2client import H2Client
from .helpers import (ClosedBeforeResponse, RawConn, free_port, rss_kib, site, wait_for_port,
                      wait_until)
from .test_websocket import WsUpstream, ws
from .tlscerts import TestCA

HOST = "app.test"


def https_porch(porch, sites: str, **keys):
    """Porch serving `sites` over HTTPS (local CA) on `p.https_port`, one worker."""
    keys.setdefault("https_port", free_port())
    keys.setdefault("tls", "internal")
    keys.setdefault("workers", 1)
    p = porch(sites, **keys)
    p.https_port = keys["https_port"]
    wait_for_port(p.https_port, p.managed, what="porch https")
    return p


def tls_site(proxy: str, extra: str = "") -> str:
    return f'[[site]]\nhosts = ["{HOST}"]\nproxy = "{proxy}"\nredirect_http = false\n{extra}'


# -- item 17: memory held after connections close -----------------------------------


def _short_tls_requests(port: int, count: int) -> None:
    """`count` connections, one after the other: TLS handshake, one request, close."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as s:
                s.sendall(request)
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
                assert got.startswith(b"HTTP/1.1 200 "), got[:100]


def test_closed_tls_connections_leave_no_memory_behind(porch, upstream):
    # Each ClientConnection formed a cycle with its parser that also held the TLS
    # machinery (SSLProtocol, SSLObject, two MemoryBIOs): ~0.28 MiB per closed
    # connection until a cyclic collection, which the worker runs rarely (gc threshold
    # 20,000).  Freed by reference counting, memory stays flat.
    up = upstream()
    p = https_porch(porch, tls_site(up.url))
    (worker,) = p.wait_workers(1)
    _short_tls_requests(p.https_port, 300)  # warm-up: caches, allocator arenas
    before = rss_kib(worker)
    _short_tls_requests(p.https_port, 2000)
    grown = rss_kib(worker) - before
    assert grown < 6 * 1024, f"worker RSS grew by {grown / 1024:.1f} MiB over 2,000 closed TLS connections"


# -- item 4: :method and :path that are not a request line ---------------------------


def _unchecked(client: H2Client) -> H2Client:
    """Let the h2 client send what it would refuse (the attacker's side)."""
    client.conn.config.validate_outbound_headers = False
    client.conn.config.normalize_outbound_headers = False
    return client


@pytest.mark.parametrize("method, path", [
    ("GET /be/x", "/be/h2methsp"),  # issue 11: reached the upstream as `GET /be/x /be/h2methsp`
    ("GET", "/be/a b"),
    ("GET", "/be/a\tb"),
    ("G\"T", "/be/quote"),
    ("GET", "be/no-slash"),
    ("GET", "*"),
])
def test_h2_method_and_path_must_make_a_request_line(porch, upstream, method, path):
    up = upstream()
    p = https_porch(porch, tls_site(up.url))
    with _unchecked(H2Client(p.https_port, HOST)) as c:
        bad = c.get(path, method=method)
        assert bad.status == 400 and bad.ended, bad
        good = c.get("/be/after")  # the same connection goes on
        assert good.status == 200, good
    stats = up.stats()
    assert stats["targets"] == ["GET /be/after"], stats["targets"]
    assert wait_until(lambda: ":path" in p.error_log_text() or ":method" in p.error_log_text(), timeout=3)
    assert ' 400 ' in p.access_log_lines(2)[0]


def test_h2_options_asterisk_is_a_request_line(porch, upstream):
    # What target it becomes upstream is item 10's business; it is not refused here.
    up = upstream()
    p = https_porch(porch, tls_site(up.url))
    with H2Client(p.https_port, HOST) as c:
        assert c.get("*", method="OPTIONS").status == 200
    assert [t.split()[0] for t in up.stats()["targets"]] == ["OPTIONS"]


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nX-Evil: 1", "a\x00b"])
def test_h2_header_values_with_cr_lf_nul_never_reach_the_upstream(porch, upstream, value):
    # h2 validates what clients send (RFC 9113 8.2.1); the connection ends with a
    # GOAWAY PROTOCOL_ERROR, and nothing of the request goes upstream.
    up = upstream()
    p = https_porch(porch, tls_site(up.url))
    with _unchecked(H2Client(p.https_port, HOST)) as c:
        c.request("/be/inj", headers=[("x-inj", value)])
        assert c.pump(lambda: c.goaway is not None, timeout=5)
    assert c.goaway.error_code == 1  # PROTOCOL_ERROR
    assert up.stats()["requests"] == 0
    # item 11: the message quoting the value (h2's) is one line, its bytes escaped
    text = p.error_log_text(wait_for="illegal character")
    assert "Illegal character" in text
    _assert_one_line_each(p)


def _assert_one_line_each(p) -> None:
    """Every line of Porch's error log is a whole entry: nothing a client sent split it."""
    raw = p.error_log_path.read_bytes()
    assert b"\r" not in raw and b"\x00" not in raw, raw[-600:]
    for line in raw.decode("utf-8").splitlines():
        assert re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\w+\] \d+: ", line), line
