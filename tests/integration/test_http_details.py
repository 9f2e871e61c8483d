"""HTTP details: trailers in chunked responses, a client leaving mid-upload, upstream host
names resolved when connecting, and HTTP/1.0 requests without Host.

Real processes on 127.0.0.1, each stopped by pid by the fixtures.
"""

from __future__ import annotations

import socket
import struct

import pytest

from .helpers import (
    PYTHON,
    UPSTREAMS,
    RawConn,
    curl_fetch,
    free_port,
    get,
    site,
    wait_for_port,
    wait_until,
)
from .upstreams import pattern_bytes, pattern_sha256


def headers_named(doc: dict, name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


# -- trailers ------------------------------------------------------------------------


def read_chunked_strictly(c: RawConn) -> tuple[bytes, list[bytes]]:
    """A chunked body per RFC 9112 7.1, checked byte by byte: (body, trailer field lines)."""
    body = bytearray()
    while True:
        line = c._read_until(b"\r\n")[:-2]
        size_text = line.split(b";")[0].strip()
        assert size_text and all(ch in b"0123456789abcdefABCDEF" for ch in size_text), \
            f"bad chunk-size line {line!r}"
        size = int(size_text, 16)
        if size == 0:
            break
        body += c._read_exact(size)
        assert c._read_exact(2) == b"\r\n", "chunk data not followed by CRLF"
    trailers = []
    while (line := c._read_until(b"\r\n")) != b"\r\n":
        name, colon, _ = line.partition(b":")
        assert colon and name and b" " not in name, f"bad trailer field line {line!r}"
        trailers.append(line[:-2])
    return bytes(body), trailers


def test_chunked_response_with_trailers_is_whole_and_well_framed(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    size = 100_000
    with RawConn(p.port, timeout=5) as c:
        c.send(get(f"/chunked?size={size}&trailers=1"))
        head = c._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head[:-4].split("\r\n")
        assert status_line.startswith("HTTP/1.1 200"), head
        fields = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        if "chunked" in fields.get("transfer-encoding", "").lower():
            assert "content-length" not in fields, head
            body, trailers = read_chunked_strictly(c)
            for line in trailers:  # passed or dropped; if passed, intact
                if line.lower().startswith(b"x-body-sha256:"):
                    assert line.split(b":", 1)[1].strip().decode() == pattern_sha256(size)
        else:
            assert "content-length" in fields, f"no framing at all: {head}"
            body = c._read_exact(int(fields["content-length"]))
        assert body == bytes(pattern_bytes(0, size))
        # The framing left the connection clean: the next request on it works.
        c.send(get("/after"))
        r = c.read_response()
        assert r.status == 200
        assert r.json()["path"] == "/after"


def test_chunked_response_with_trailers_through_curl(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    r = curl_fetch(f"{p.url}/chunked?size=300000&trailers=1", "-H", "Host: app.test")
    assert (r.rc, r.status) == (0, 200), r.stderr
    assert r.body == bytes(pattern_bytes(0, 300_000))


# -- client leaves mid-upload --------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_disconnect_mid_upload_aborts_upstream_request(how, upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    c = RawConn(p.port, timeout=5)
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\n"
           + b"x" * 100_000)
    assert wait_until(lambda: (s := up.stats())["requests"] == 1 and s["open_connections"] == 1), \
        f"upload never reached the upstream: {up.stats()}"
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()

    # The upstream sees its request aborted: the connection carrying it closes.
    assert wait_until(lambda: up.stats()["open_connections"] == 0, timeout=3), \
        f"upstream connection still open 3 s after the client left mid-upload: {up.stats()}"

    # Porch keeps serving, on a fresh upstream connection.
    r = curl_fetch(f"{p.url}/next", "-H", "Host: app.test", "--data-binary", "y" * 1000)
    assert r.status == 200
    doc = r.json()
    assert doc["body_length"] == 1000
    assert doc["conn_request"] == 1
    stats = up.stats()
    assert stats["requests"] == 2
    assert stats["connections"] == 2


# -- upstream host names -------------------------------------------------------------


def test_upstream_host_name_is_resolved_when_connecting(procs, porch, tmp_path):
    port = free_port()
    p = porch(site(f"http://localhost:{port}"))  # nothing listens there yet
    r = curl_fetch(f"{p.url}/before", "-H", "Host: app.test")
    assert r.status == 502

    late = procs.start([PYTHON, str(UPSTREAMS), "--port", str(port)], cwd=tmp_path,
                       name="late-upstream")
    wait_for_port(port, late, what="late upstream")
    r = curl_fetch(f"{p.url}/after", "-H", "Host: app.test")
    assert r.status == 200, f"{r.status} {r.body[:200]!r}"
    doc = r.json()
    assert doc["server_port"] == port
    assert doc["path"] == "/after"
    assert p.managed.running()


# -- HTTP/1.0 without Host -----------------------------------------------------------


def read_http10_response(port: int, request: bytes):
    with RawConn(port, timeout=5) as c:
        c.send(request)
        r = c.read_response()
        assert c.closed_by_peer(timeout=3), "HTTP/1.0 without keep-alive: connection left open"
    return r


def test_http10_without_host_is_served_by_catch_all_site(upstream, porch):
    named, catch_all = upstream(), upstream()
    p = porch(site(named.url) + f'\n[[site]]\nproxy = "{catch_all.url}"\n')

    r = read_http10_response(p.port, b"GET /who?x=1 HTTP/1.0\r\nUser-Agent: old\r\n\r\n")
    assert r.status == 200, (r.status, r.body[:200])
    doc = r.json()
    assert doc["server_port"] == catch_all.port
    assert doc["target"] == "/who?x=1"
    # The request upstream is HTTP/1.1, which requires exactly one Host (RFC 9112 3.2).
    assert len(headers_named(doc, "host")) == 1, doc["headers"]

    # Control: with a Host, the same request reaches the named site.
    r = read_http10_response(p.port, b"GET /who HTTP/1.0\r\nHost: app.test\r\n\r\n")
    assert r.status == 200
    assert r.json()["server_port"] == named.port


def test_http10_without_host_and_no_catch_all_is_404(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    r = read_http10_response(p.port, b"GET / HTTP/1.0\r\n\r\n")
    assert r.status == 404
    assert up.stats()["requests"] == 0
