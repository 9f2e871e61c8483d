"""HTTP/2 to clients: ALPN, requests and bodies both ways, what the upstream sees,
stream errors kept to their stream, Porch's own answers, WebSockets over HTTP/2.

Real processes: Porch with a local-CA site, the echo upstream (HTTP/1.1), the
`websockets` upstream; curl --http2 and a raw `h2` client (h2client.py).
The attacks are in test_h2_attacks.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from .h2client import H2Client
from .helpers import RSSSampler, curl, curl_fetch, free_port, refused_port, resolve, wait_for_port, wait_until
from .test_websocket import WsUpstream
from .upstreams import pattern_sha256

HOST = "app.test"


# Every test of HTTP/2 to clients (here, test_h2_attacks.py, test_h2load.py: all through
# this fixture) runs on both engines (server/h2engine.py): libnghttp2 and pure-Python h2.
H2_ENGINES = ("nghttp2", "h2")


@pytest.fixture(params=H2_ENGINES)
def h2porch(porch, request):
    """Factory: Porch serving `sites` over HTTPS (local CA) on `p.https_port`, with the
    HTTP/2 engine of the test's parameter."""

    def start(sites: str, **keys):
        keys.setdefault("http2_engine", request.param)
        keys.setdefault("https_port", free_port())
        keys.setdefault("tls", "internal")
        p = porch(sites, **keys)
        p.https_port = keys["https_port"]
        wait_for_port(p.https_port, p.managed, what="porch https")
        return p

    return start


def tls_site(proxy: str, extra: str = "", host: str = HOST) -> str:
    return f'[[site]]\nhosts = ["{host}"]\nproxy = "{proxy}"\nredirect_http = false\n{extra}'


def curl2(p, path: str, *args: str, timeout: float = 60.0):
    return curl_fetch(f"https://{HOST}:{p.https_port}{path}", "--http2", "-k",
                      *resolve(HOST, p.https_port), *args, timeout=timeout)


def echo_of(result) -> dict:
    return json.loads(bytes(result.data))


def test_alpn_h2_get_and_what_the_upstream_sees(h2porch, upstream):
    up = upstream()
    p = h2porch(tls_site(up.url))
    r = curl2(p, "/hello?x=1", "-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Remote-User: admin")
    assert r.rc == 0, r.stderr
    assert r.status == 200 and r.stderr == ""
    seen = json.loads(r.body)
    assert seen["version"] == "HTTP/1.1" and seen["target"] == "/hello?x=1"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["host"] == f"{HOST}:{p.https_port}"  # :authority, as curl sends it
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the client's own was dropped
    assert "x-remote-user" not in headers
    line = p.access_log_lines(1)[-1]
    assert '"GET /hello?x=1 HTTP/2.0" 200' in line


def test_curl_negotiates_http2(h2porch, upstream):
    p = h2porch(tls_site(upstream().url))
    out = curl("-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
               *resolve(HOST, p.https_port), f"https://{HOST}:{p.https_port}/")
    assert out.stdout == "200 2"


def test_http2_off_offers_only_http11(h2porch, upstream):
    p = h2porch(tls_site(upstream().url), http2=False)
    with H2Client(p.https_port, alpn=("h2", "http/1.1")) as c:
        pass
    assert c.alpn == "http/1.1"
    out = curl("-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
               *resolve(HOST, p.https_port), f"https://{HOST}:{p.https_port}/")
    assert out.stdout == "200 1.1"


def test_bodies_both_ways_with_and_without_length(h2porch, upstream, tmp_path):
    up = upstream()
    p = h2porch(tls_site(up.url))
    body = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "body.bin"
    src.write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()
    r = curl2(p, "/up", "--data-binary", f"@{src}")
    seen = json.loads(r.body)
    assert (seen["body_length"], seen["body_sha256"], seen["body_framing"]) == (len(body), sha, "length")
    # no content-length on the HTTP/2 side: the upstream gets it chunked
    with H2Client(p.https_port) as c:
        res = c.response(c.request("/up", "POST", body=body), timeout=30)
        seen = echo_of(res)
        assert (seen["body_length"], seen["body_sha256"], seen["body_framing"]) == (len(body), sha, "chunked")
        # a GET without a body goes without framing headers
        seen = echo_of(c.get("/get"))
        assert seen["body_framing"] == "none" and seen["method"] == "GET"
    # 64 MiB down, checked
    out = tmp_path / "down.bin"
    r = curl("-k", "--http2", "-o", str(out), *resolve(HOST, p.https_port),
             f"https://{HOST}:{p.https_port}/stream?size=64M", timeout=60)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == pattern_sha256(64 * 1024 * 1024)


def test_cookie_crumbs_joined_and_authority_is_host(h2porch, upstream):
    p = h2porch(tls_site(upstream().url))
    with H2Client(p.https_port) as c:
        res = c.get("/c", headers=[("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")])
    headers = {}
    for k, v in echo_of(res)["headers"]:
        headers.setdefault(k.lower(), []).append(v)
    assert headers["cookie"] == ["a=1; b=2"]
    assert headers["host"] == [HOST]


def test_many_streams_on_one_connection_and_a_broken_one_is_reset_alone(h2porch, upstream):
    p = h2porch(tls_site(upstream().url))
    with H2Client(p.https_port) as c:
        big = c.request("/stream?size=4M")
        broken = c.request("/close-mid-body")
        small = [c.request(f"/n/{i}") for i in range(30)]
        res = c.response(broken)
        # the upstream closed mid-body: the stream is reset, never passed off as whole
        assert res.reset is not None and not res.ended
        assert res.status == 200 and len(res.data) < 100000
        assert len(c.response(big, timeout=30).data) == 4 * 1024 * 1024
        assert [echo_of(c.response(s))["path"] for s in small] == [f"/n/{i}" for i in range(30)]
        assert c.get("/after").status == 200
        assert not c.closed and c.goaway is None
    assert "in the middle of the response" in p.error_log_text(wait_for="in the middle")


def test_porchs_own_answers_over_h2(h2porch, upstream):
    up = upstream()
    sites = (tls_site(up.url, 'max_body = "1k"\n')
             + f'\n[[site]]\nhosts = ["down.test"]\nproxy = "http://127.0.0.1:{refused_port()}"\n')
    p = h2porch(sites)
    with H2Client(p.https_port) as c:
        res = c.get("/x", authority="nobody.test")
        assert res.status == 404 and res.data
        res = c.get("/x", authority="down.test")
        assert res.status == 502 and res.data == b"502 Bad Gateway\n"
        assert res.header(b"content-length") == b"16"
        res = c.response(c.request("/x", "POST", body=b"x" * 5000))
        assert res.status == 413
        res = c.response(c.request("/x", "POST", headers=[("content-length", "5000")], body=b"y" * 5000))
        assert res.status == 413
        res = c.get("/x", method="HEAD", authority="down.test")
        assert res.status == 502 and res.data == b"" and res.ended
        assert c.get("/fine").status == 200  # the connection lives on
    errors = p.error_log_text(wait_for="max_body")
    assert "connecting to" in errors and "max_body" in errors


def test_request_checks_over_h2_slash_trace_and_max_body(h2porch, upstream):
    """The request policies of issue 12 (policies/trailing_slash.py, trace.py,
    max_body.py) over HTTP/2, as tests/integration/test_prefix.py, test_issue11_requests.py
    and test_errors.py check them over HTTP/1.1: nothing of these reaches the upstream."""
    up = upstream()
    p = h2porch(f'[[site]]\nhosts = ["{HOST}"]\nredirect_http = false\n'
                f'[[site.route]]\npath = "/radicale/"\nproxy = "{up.url}"\nstrip_prefix = true\n'
                'max_body = "1k"\n')
    with H2Client(p.https_port) as c:
        for target, want in (("/radicale", b"/radicale/"), ("/radicale?x=1", b"/radicale/?x=1")):
            res = c.get(target)
            assert res.status == 301 and res.header(b"location") == want and res.data
        res = c.get("/radicale/x", method="TRACE")
        assert res.status == 405
        assert res.header(b"allow") == b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
        res = c.response(c.request("/radicale/x", "POST", headers=[("content-length", "2000")],
                                   body=b"y" * 2000))
        assert res.status == 413
        assert c.get("/elsewhere").status == 404
        assert up.stats()["requests"] == 0
        assert echo_of(c.get("/radicale/fine?y=2"))["target"] == "/fine?y=2"  # the connection lives on
    errors = p.error_log_text(wait_for="max_body")
    assert "body of 2000 bytes over max_body 1024" in errors and "TRACE is not allowed" in errors


def test_head_and_204_have_no_body(h2porch, upstream):
    p = h2porch(tls_site(upstream().url))
    with H2Client(p.https_port) as c:
        res = c.get("/x", method="HEAD")
        assert res.status == 200 and res.data == b"" and int(res.header(b"content-length")) > 0
        res = c.get("/status/204")
        assert res.status == 204 and res.data == b"" and res.ended


def _ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (RFC 6455 5.2), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def test_extended_connect_for_another_protocol_is_400_on_its_stream(h2porch, upstream):
    """RFC 8441 tunnels are for websocket only here: :protocol chat gets 400 on that
    stream, nothing goes upstream, and the connection goes on."""
    up = upstream()
    p = h2porch(tls_site(up.url))
    with H2Client(p.https_port) as c:
        c.pump(lambda: c.remote_settings, 5)
        sid = c.request("/chat", "CONNECT", end=False, extra_pseudo=[(":protocol", "chat")])
        stream = c.streams[sid]
        assert c.pump(lambda: stream.headers or stream.done, 5)
        assert stream.status == 400
        assert c.get("/after").status == 200
    assert up.stats()["requests"] == 1  # /after only


def test_websocket_over_h2_rfc8441(h2porch, procs, tmp_path):
    ws = WsUpstream(procs, tmp_path)
    p = h2porch(tls_site(ws.url))
    with H2Client(p.https_port) as c:
        c.pump(lambda: c.remote_settings, 5)
        assert c.remote_settings.get(8) == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
        sid = c.request("/echo", "CONNECT", end=False, extra_pseudo=[(":protocol", "websocket")],
                        headers=[("sec-websocket-version", "13")])
        stream = c.streams[sid]
        assert c.pump(lambda: stream.headers or stream.done, 5)
        assert stream.status == 200 and not stream.done
        assert stream.header(b"sec-websocket-accept") is None
        for text in (b"hello over h2", b"again"):
            before = len(stream.data)
            c.conn.send_data(sid, _ws_frame(text))
            c.flush()
            assert c.pump(lambda: len(stream.data) >= before + 2 + len(text), 5)
            frame = bytes(stream.data[before:])
            assert frame[0] == 0x81 and frame[1] == len(text) and frame[2:] == text  # server frames are unmasked
        c.conn.send_data(sid, _ws_frame(struct.pack("!H", 1000) + b"bye", opcode=8))
        c.flush()
        assert c.pump(lambda: stream.done, 5)
        assert c.get("/__stats").status in (200, 404)  # the connection is still usable
    assert ws.stats()["close_codes"] == [1000]
    lines = [ln for ln in p.access_log_lines(2) if "/echo" in ln]
    assert len(lines) == 1 and '"GET /echo HTTP/2.0" 200' in lines[0]  # one line, when it ended
    # the upstream got a real HTTP/1.1 handshake (a key Porch made, since RFC 8441 has none)
    headers = {k.lower(): v for k, v in ws.stats()["last_headers"]}
    assert len(base64.b64decode(headers["sec-websocket-key"])) == 16
    assert headers["upgrade"].lower() == "websocket"


RSS_LIMIT_KIB = 60 * 1024  # as the HTTP/1.1 tests: the worker alone is ~37 MiB of code


def test_download_to_a_stalled_reader_is_flow_controlled(h2porch, upstream):
    """A client that stops granting window: Porch holds a bounded amount, pauses the
    upstream, and the stream carries on, whole, once the client reads again."""
    p = h2porch(tls_site(upstream().url))
    size = 200 * 1024 * 1024
    with H2Client(p.https_port, auto_ack=False) as c, RSSSampler(p) as rss:
        sid = c.request(f"/stream?size={size}")
        stream = c.streams[sid]
        c.pump(lambda: stream.done, 3)  # the windows fill (64 KiB), then nothing
        stalled_at = len(stream.data)
        assert stalled_at <= 65535 and not stream.done
        # grant window as we read, from now on
        c.auto_ack = True
        c.conn.acknowledge_received_data(stalled_at, sid)
        c.conn.increment_flow_control_window(8 * 1024 * 1024)
        c.conn.increment_flow_control_window(8 * 1024 * 1024, sid)
        c.flush()
        assert c.response(sid, timeout=60).ended
    assert len(stream.data) == size
    assert hashlib.sha256(stream.data).hexdigest() == pattern_sha256(size)
    assert rss.peak_kib < RSS_LIMIT_KIB, rss.peak_kib


def test_upload_to_an_upstream_that_does_not_read_is_flow_controlled(h2porch, procs, tmp_path):
    """Porch acknowledges request DATA only once the upstream took it: a client cannot
    push more than the windows and socket buffers into Porch."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        accepted = []
        listener.settimeout(10)
        p = h2porch(tls_site(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        with H2Client(p.https_port) as c, RSSSampler(p) as rss:
            sid = c.request("/upload", "POST", headers=[("content-length", str(1 << 30))], end=False)
            accepted.append(listener.accept()[0])  # the upstream connection, never read
            sent = 0
            deadline = time.monotonic() + 3
            chunk = b"u" * 16384
            while time.monotonic() < deadline:
                window = min(c.conn.local_flow_control_window(sid), len(chunk))
                if window > 0:
                    c.conn.send_data(sid, chunk[:window])
                    sent += window
                    c.flush()
                else:
                    try:
                        c.read_once(timeout=0.2)
                    except socket.timeout:
                        pass
            # what left the client: Porch's windows, plus what the kernel buffers hold
            assert sent < 32 * 1024 * 1024, sent
            assert rss.peak_kib < RSS_LIMIT_KIB, rss.peak_kib
    finally:
        for s in accepted:
            s.close()
        listener.close()


def test_reload_sends_goaway_and_streams_in_flight_finish(h2porch, upstream):
    """A reload retires the old worker: its HTTP/2 connections get GOAWAY, the request
    in flight completes on it, and new connections reach the new config."""
    old, new = upstream(), upstream()
    p = h2porch(tls_site(old.url))
    url = f"https://{HOST}:{p.https_port}/slow?delay=2"
    inflight = subprocess.Popen(["curl", "-sk", "--http2", "-w", " %{http_version}", *resolve(HOST, p.https_port), url],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: old.stats()["requests"] == 1, timeout=5)
        p.write_config(tls_site(new.url))
        assert p.reload().returncode == 0
        out, _ = inflight.communicate(timeout=20)
    finally:
        inflight.kill()
    seen = json.loads(out.rsplit(" ", 1)[0])
    assert out.endswith(" 2") and seen["path"] == "/slow" and seen["server_port"] == old.port
    with H2Client(p.https_port) as c:
        assert echo_of(c.get("/x"))["server_port"] == new.port


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_server_sent_events_arrive_one_by_one(h2porch, upstream, framing):
    """Each event is on the client as soon as the upstream sends it, never held back
    (with an end delimited by chunks, or by the upstream closing)."""
    p = h2porch(tls_site(upstream().url))
    with H2Client(p.https_port) as c:
        sid = c.request(f"/events?count=6&interval=0.15&framing={framing}")
        stream = c.streams[sid]
        lags = []
        for n in range(1, 7):
            assert c.pump(lambda: stream.data.count(b"\n\n") >= n or stream.done, 5)
            sent_at = float(bytes(stream.data).split(b"\n\n")[n - 1].split()[-1])
            lags.append(time.time() - sent_at)
        assert c.response(sid).ended
    assert stream.header(b"content-type") == b"text/event-stream"
    assert max(lags) < 0.1, lags


def test_upstream_header_with_trailing_whitespace_reaches_an_http2_client(h2porch, tmp_path):
    """HTTP/1.1 lets a header value end in spaces; HTTP/2 does not (RFC 9113 8.2.1), and
    curl (nghttp2) fails the stream if it gets one.  Porch trims them."""
    listener = socket.create_server(("127.0.0.1", 0))
    answer = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Trailing: yes  \t\r\n"
              b"X-Empty:\r\n\r\nok\n")

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        p = h2porch(tls_site(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        r = curl2(p, "/")
        assert r.rc == 0 and r.status == 200 and r.body == b"ok\n", r.stderr
        assert ("x-trailing", "yes") in r.headers
    finally:
        listener.close()


def test_failed_uploads_do_not_shrink_the_connection_window(h2porch, upstream):
    """Request bytes held back while an upstream did not take them are given back to
    the connection's window when that request ends (here: 504s), so the connection's
    other and later uploads still flow."""
    listener = socket.socket()  # accepts, never reads or answers; a small window
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        up = upstream()
        sites = (tls_site(f"http://127.0.0.1:{listener.getsockname()[1]}", 'upstream_timeout = "1s"\n')
                 + "\n" + tls_site(up.url, host="ok.test"))
        p = h2porch(sites)
        body = b"b" * (8 * 1024 * 1024)  # more than kernel buffers take (4 MiB at most)
        with H2Client(p.https_port) as c:
            assert c.pump(lambda: c.remote_settings, 5)  # stream windows of 256 KiB
            left = {}
            for _ in range(6):
                sid = c.request("/up", "POST", headers=[("content-length", str(len(body)))], end=False)
                left[sid] = len(body)
            deadline = time.monotonic() + 20
            # push as the windows allow until every upload has its 504: Porch holds
            # back what the stalled upstreams do not take, up to the 1 MiB connection window
            while not all(c.streams[sid].done for sid in left) and time.monotonic() < deadline:
                for sid, n in left.items():
                    if c.streams[sid].done:
                        continue
                    room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size, n)
                    if room > 0:
                        c.conn.send_data(sid, body[:room], end_stream=room == n)
                        left[sid] = n - room
                c.flush()
                try:
                    c.read_once(timeout=0.05)
                except socket.timeout:
                    pass
            assert [c.streams[sid].status if c.streams[sid].headers else c.streams[sid] for sid in left] == [504] * 6
            res = c.response(c.request("/fine", "POST", body=body, authority="ok.test"), timeout=20)
            assert res.status == 200 and echo_of(res)["body_length"] == len(body)
    finally:
        listener.close()
