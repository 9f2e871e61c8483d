"""WebSockets through Porch: real `websockets` clients, a real `websockets` server
(ws_upstream.py, its own process), and what a user would notice: messages echoed
whole, close codes passed on, ends noticed, idle tunnels cut, memory bounded.

The tunnel tests run twice: ws:// to Porch's HTTP listener and wss:// to its HTTPS
one (certificate files from a test CA), where a tunnel joins a TLS transport to a
plain one."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import time

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .helpers import (MiB, PYTHON, HERE, Managed, RawConn, RSSSampler, curl_fetch,
                      free_port, resolve, site, wait_for_port, wait_until)

from .tlscerts import TestCA

WS_UPSTREAM = HERE / "ws_upstream.py"
RSS_LIMIT_KIB = 60 * 1024


class WsUpstream:
    """A running ws_upstream.py."""

    def __init__(self, procs, workdir):
        self.port = free_port()
        self.managed: Managed = procs.start([PYTHON, str(WS_UPSTREAM), "--port", str(self.port)],
                                            cwd=workdir, name=f"ws-upstream-{self.port}")
        wait_for_port(self.port, self.managed, what="ws upstream")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        r = curl_fetch(f"{self.url}/__stats", timeout=5)
        return json.loads(r.body)


@pytest.fixture
def ws_upstream(procs, tmp_path):
    return WsUpstream(procs, tmp_path)


@pytest.fixture(params=["ws", "wss"])
def front(request, porch, tmp_path):
    """Factory like `porch`: Porch serving the test's app.test site over HTTP (ws://),
    or over HTTPS (wss://) with certificate files from a test CA."""

    def start(sites: str, **keys):
        if request.param == "ws":
            return plain(porch(sites, **keys))
        ca = TestCA(tmp_path)
        cert, key, _ = ca.leaf(["app.test"], "app")
        host_line = 'hosts = ["app.test"]\n'
        sites = sites.replace(host_line, f'{host_line}tls = {{ cert = "{cert}", key = "{key}" }}\n', 1)
        keys.setdefault("https_port", free_port())
        p = porch(sites, **keys)
        wait_for_port(keys["https_port"], p.managed, what="porch https")
        p.ws_scheme, p.ws_port = "wss", keys["https_port"]
        p.ssl = ssl.create_default_context(cafile=str(ca.ca_path))
        return p

    return start


def plain(p):
    """Porch `p`, reached by ws() over its HTTP listener."""
    p.ws_scheme, p.ws_port, p.ssl = "ws", p.port, None
    return p


def ws(p, path: str, **kw) -> connect:
    """A websockets client connecting through Porch `p` as ws(s)://app.test/PATH."""
    kw.setdefault("max_size", None)
    kw.setdefault("ping_interval", None)
    kw.setdefault("compression", None)  # bytes on the wire as sent: sizes mean something
    if p.ssl is not None:
        kw["ssl"] = p.ssl
    return connect(f"{p.ws_scheme}://app.test:{p.ws_port}{path}", host="127.0.0.1", port=p.ws_port, **kw)


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def json_log(p, count: int = 1) -> list[dict]:
    return [json.loads(line) for line in p.access_log_lines(count)]


def settled_fds(p) -> int:
    """Porch's fd count once a first tunnel has come and gone (lazy opens done)."""
    async def once():
        async with ws(p, "/echo") as c:
            await c.send("warm-up")
            await c.recv()
    run(once())
    time.sleep(0.3)
    return p.fd_count()


# -- messages ----------------------------------------------------------------------


def test_echo_text_and_binary_up_to_16mib(ws_upstream, front):
    p = front(site(ws_upstream.url), access_log_format="json")
    messages = ["hello", "é" * 1000, b"\x00\x01\xff", os.urandom(MiB),
                "x" * (16 * MiB), os.urandom(16 * MiB)]

    async def session():
        async with ws(p, "/echo") as c:
            for m in messages:
                await c.send(m)
                back = await c.recv()
                assert type(back) is type(m) and back == m, f"{type(m).__name__} of {len(m)} changed"
    with RSSSampler(p) as rss:
        run(session())
    [entry] = json_log(p)
    assert entry["status"] == 101 and entry["method"] == "GET" and entry["target"] == "/echo"
    sent = sum(len(m.encode() if isinstance(m, str) else m) for m in messages)
    # each way: the payloads plus a few bytes of framing (and the client's masks)
    assert sent <= entry["bytes_in"] < sent + 1024, entry
    assert sent <= entry["bytes_out"] < sent + 1024, entry
    assert entry["duration"] > 0
    assert rss.peak_kib < RSS_LIMIT_KIB + 64 * 1024, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"


def test_forwarded_handshake_headers(ws_upstream, front):
    p = front(site(ws_upstream.url))

    async def session():
        async with ws(p, "/echo", additional_headers={"Origin": "http://app.test"}) as c:
            await c.send("x")
            await c.recv()
    run(session())
    headers = {k.lower(): v for k, v in ws_upstream.stats()["last_headers"]}
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["host"] == f"app.test:{p.ws_port}"
    assert headers["x-forwarded-proto"] == ("https" if p.ssl else "http")
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "sec-websocket-key" in headers and headers["origin"] == "http://app.test"


def test_response_header_rules_reach_the_101(ws_upstream, front):
    """Issue 13: response headers go on every response, 101s included (nginx's
    `always`), with their {request_id} filled in; the 101's own fields stay."""
    rules = ('response_headers = { set = { "X-Frame-Options" = "SAMEORIGIN", "X-Req" = "id={request_id}" } }\n'
             "security_headers = true\n")
    p = front(site(ws_upstream.url, rules))

    async def session():
        async with ws(p, "/echo") as c:
            await c.send("x")
            await c.recv()
            return c.response
    response = run(session())
    assert response.status_code == 101
    headers = response.headers
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Req"] == "id=" + headers["X-Request-ID"] and len(headers["X-Request-ID"]) >= 16
    assert headers["Upgrade"].lower() == "websocket" and "sec-websocket-accept" in {k.lower() for k in headers}


def test_thousand_concurrent_connections(ws_upstream, procs, tmp_path, front):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    assert want >= 4096, f"RLIMIT_NOFILE hard limit {hard} is too low for 1,000 tunnels"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        # started after the raise: children inherit the limit
        up = WsUpstream(procs, tmp_path)
        p = front(site(up.url))
        baseline = settled_fds(p)
        n = 1000

        async def one(i: int, opened: asyncio.Event, go: asyncio.Event, counter: list[int]):
            async with ws(p, "/echo") as c:
                counter[0] += 1
                if counter[0] == n:
                    opened.set()
                await go.wait()  # all 1,000 open at once
                for j in range(5):
                    await c.send(f"{i}:{j}")
                    assert await c.recv() == f"{i}:{j}"
                await c.send(os.urandom(4096))
                await c.recv()

        async def main():
            opened, go, counter = asyncio.Event(), asyncio.Event(), [0]
            tasks = []
            for start in range(0, n, 100):  # in waves: within the listen backlog
                tasks += [asyncio.create_task(one(i, opened, go, counter))
                          for i in range(start, start + 100)]
                await asyncio.sleep(0.05)
            await asyncio.wait_for(opened.wait(), 60)
            assert up.stats()["open"] == n
            go.set()
            await asyncio.gather(*tasks)
        started = time.monotonic()
        run(main(), timeout=120)
        elapsed = time.monotonic() - started
        assert wait_until(lambda: up.stats()["open"] == 0, timeout=10)
        codes = up.stats()["close_codes"]
        assert codes.count(1000) == n + 1, codes[:20]
        assert wait_until(lambda: p.fd_count() <= baseline, timeout=10), \
            f"Porch holds {p.fd_count()} fds, {baseline} before"
        assert len(p.access_log_lines(n + 1)) == n + 1
        print(f"1,000 tunnels in {elapsed:.1f}s")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ping_pong(ws_upstream, front):
    p = front(site(ws_upstream.url))

    async def session():
        async with ws(p, "/echo") as c:
            for _ in range(3):
                latency = await asyncio.wait_for(await c.ping(), 5)
                assert latency < 1
            await c.send("still here")
            assert await c.recv() == "still here"
    run(session())


# -- ends --------------------------------------------------------------------------


def test_close_codes_pass_both_ways(ws_upstream, front):
    p = front(site(ws_upstream.url))

    async def server_closes():
        async with ws(p, "/close") as c:
            await c.send("4000 done here")
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
        assert info.value.rcvd.code == 4000 and info.value.rcvd.reason == "done here"

    async def client_closes():
        async with ws(p, "/echo") as c:
            await c.send("hi")
            await c.recv()
            await c.close(1001, "tab closed")
    run(server_closes())
    run(client_closes())
    assert wait_until(lambda: ws_upstream.stats()["close_codes"][-1:] == [1001]), ws_upstream.stats()


def test_upstream_dying_mid_session_closes_the_client(ws_upstream, front):
    p = front(site(ws_upstream.url))
    baseline = settled_fds(p)

    async def session():
        async with ws(p, "/echo") as c:
            await c.send("before")
            assert await c.recv() == "before"
            os.kill(ws_upstream.managed.pid, signal.SIGKILL)
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(c.recv(), 5)
            return time.monotonic() - started
    took = run(session())
    assert took < 2, f"the client noticed after {took:.1f}s"
    assert wait_until(lambda: p.fd_count() <= baseline, timeout=5), \
        f"Porch holds {p.fd_count()} fds, {baseline} before the session"
    assert p.access_log_lines(2)[-1].split('"')[2].split()[0] == "101"  # logged when it ended


def test_client_vanishing_mid_session_closes_the_upstream(ws_upstream, front):
    p = front(site(ws_upstream.url))
    baseline = settled_fds(p)

    async def session():
        c: ClientConnection = await ws(p, "/echo")
        await c.send("before")
        assert await c.recv() == "before"
        c.transport.abort()  # RST, no close frame: a laptop lid closing
    run(session())
    assert wait_until(lambda: ws_upstream.stats()["open"] == 0, timeout=5), ws_upstream.stats()
    assert ws_upstream.stats()["close_codes"][-1] == 1006
    assert wait_until(lambda: p.fd_count() <= baseline, timeout=5), \
        f"Porch holds {p.fd_count()} fds, {baseline} before the session"


def test_idle_timeout_is_per_route_and_apart_from_upstream_timeout(ws_upstream, front):
    # LiveKit's `proxy_read_timeout 300s` in a location, as a route key.
    p = front(f'[[site]]\nhosts = ["app.test"]\nproxy = "{ws_upstream.url}"\n'
              'upstream_timeout = "1s"\n'
              f'[[site.route]]\npath = "/short/"\nproxy = "{ws_upstream.url}"\n'
              'strip_prefix = true\ntunnel_idle_timeout = "1s"\n', access_log_format="json")

    async def idle(path: str, wait: float) -> float | None:
        """Seconds until Porch closed an idle session, or None if it stayed open."""
        async with ws(p, path) as c:
            await c.send("x")
            await c.recv()
            started = time.monotonic()
            try:
                await asyncio.wait_for(c.recv(), wait)
            except asyncio.TimeoutError:
                return None
            except ConnectionClosed:
                return time.monotonic() - started
        return None

    async def busy(path: str, seconds: float) -> None:
        async with ws(p, path) as c:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await c.send("tick")
                assert await c.recv() == "tick"
                await asyncio.sleep(0.3)

    async def main():
        return await asyncio.gather(idle("/short/echo", 4), idle("/echo", 3), busy("/short/echo", 3))
    cut, kept, _ = run(main())
    assert cut is not None and 0.9 <= cut <= 2.5, f"idle tunnel cut after {cut}"
    assert kept is None, "upstream_timeout (1s) cut a tunnel: it must not apply to tunnels"
    entries = json_log(p, 3)
    cut_entry = next(e for e in entries if e["error"])
    assert cut_entry["status"] == 101 and "idle for 1s" in cut_entry["error"]


# -- not 101, not websocket ----------------------------------------------------------


def test_upgrade_answered_without_101_is_a_normal_response(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        c.send(b"GET /plain HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        assert seen["upgrade"] == "websocket" and seen["connection"].lower() == "upgrade"
        assert c.closed_by_peer()


def test_h2c_upgrade_is_not_forwarded(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        c.send(b"GET /first HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
               b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n")
        first = c.read_response()
        assert first.status == 200 and first.version == "HTTP/1.1"
        names = {k.lower() for k, _ in first.json()["headers"]}
        assert not names & {"upgrade", "http2-settings", "connection"}, names
        second = c.read_response()  # the same connection carries on in HTTP/1.1
        assert second.status == 200 and second.json()["path"] == "/second"
        assert first.json()["conn_id"] == second.json()["conn_id"]
    # curl asks for h2c on http:// with --http2 and must get plain HTTP/1.1
    r = subprocess.run(["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                        *resolve("app.test", p.port), f"http://app.test:{p.port}/curl"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "1.1 200", r.stderr
    targets = up.stats()["targets"]
    assert "GET /curl" in targets


# -- flow control ------------------------------------------------------------------


def test_fast_sender_to_stalled_upstream_is_held_back(ws_upstream, front):
    p = front(site(ws_upstream.url))
    block = os.urandom(MiB)

    async def push() -> int:
        sent = 0
        async with ws(p, "/stall", write_limit=64 * 1024) as c:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                try:
                    await asyncio.wait_for(c.send(block), end - time.monotonic())
                except asyncio.TimeoutError:
                    break
                sent += len(block)
            c.transport.abort()
        return sent
    with RSSSampler(p) as rss:
        sent = run(push())
    # Without flow control Porch would take GiBs in 3 s; with it, only socket
    # buffers and the upstream's 16-frame queue hold anything.
    assert sent < 160 * MiB, f"the client pushed {sent // MiB} MiB into a stalled upstream"
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"


def test_flooding_upstream_to_slow_client_is_held_back(ws_upstream, front):
    p = front(site(ws_upstream.url))

    async def sit() -> None:
        async with ws(p, "/flood", max_queue=1) as c:
            await asyncio.sleep(3)  # reads nothing: the library stops reading its socket
            c.transport.abort()
    with RSSSampler(p) as rss:
        run(sit())
    flooded = ws_upstream.stats()["flood_bytes"]
    assert flooded < 160 * MiB, f"the upstream pushed {flooded // MiB} MiB to a client reading nothing"
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"


def test_h2c_upgrade_with_a_body_is_a_plain_post(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    body = os.urandom(300_000)  # several reads: past max_header_size too
    with RawConn(p.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body +
               b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
        first = c.read_response()
        assert first.status == 200
        assert first.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        second = c.read_response()
        assert second.status == 200 and second.json()["path"] == "/after"
    r = subprocess.run(["curl", "-sS", "--http2", "-d", "hello", "-o", "/dev/null", "-w",
                        "%{http_version} %{http_code}", *resolve("app.test", p.port),
                        f"http://app.test:{p.port}/curl-post"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "1.1 200", r.stderr


def test_half_close_passes_through_the_tunnel(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        c.send(b"GET /upgrade-count HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n")
        r = c.read_response()
        assert r.status == 101 and r.header("upgrade") == "websocket"
        c.send(b"x" * 100_000)
        c.sock.shutdown(socket.SHUT_WR)  # done sending; still reading
        # the upstream sees the end, answers, closes: all of it reaches the client
        assert c.read_until_closed() == b"got 100000 bytes"
    lines = p.access_log_lines(1)
    assert '" 101 16 ' in lines[-1], lines  # 16 bytes sent to the client


def test_reload_and_stop_close_tunnels_without_waiting_for_them(ws_upstream, front):
    # Tunnels have no request to finish: a draining worker closes them once its HTTP
    # requests are done (Caddy does the same); clients reconnect to the new workers.
    p = front(site(ws_upstream.url), shutdown_timeout="30s")
    p.wait_workers(1)

    async def session() -> float:
        async with ws(p, "/echo") as old:
            await old.send("before")
            assert await old.recv() == "before"
            r = await asyncio.to_thread(p.reload)
            assert r.returncode == 0, r.stdout + r.stderr
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(old.recv(), 10)
        async with ws(p, "/echo") as new:  # served by the new worker
            await new.send("after")
            assert await new.recv() == "after"
            started = time.monotonic()
            await asyncio.to_thread(p.stop, 10)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(new.recv(), 5)
            return time.monotonic() - started
    took = run(session())
    assert took < 5, f"stopping took {took:.1f}s with a tunnel open (shutdown_timeout 30s)"


def test_stuck_reader_does_not_keep_its_socket(ws_upstream, porch):
    # The client reads nothing, the upstream floods until flow control stops it: no
    # byte moves, the idle timeout closes the tunnel, and the client's side, whose
    # bytes will never be read, is aborted rather than kept for ever.
    p = plain(porch(site(ws_upstream.url, 'tunnel_idle_timeout = "1s"\n')))
    baseline = settled_fds(p)

    async def stuck() -> None:
        c = await ws(p, "/flood", max_queue=1)
        c.transport.pause_reading()  # a client that stopped reading its socket
        ok = await asyncio.to_thread(wait_until, lambda: p.fd_count() <= baseline, 12, 0.2)
        assert ok, f"Porch holds {p.fd_count()} fds, {baseline} before: the stuck client's socket kept"
        c.transport.abort()
    run(stuck())


def test_upgrade_pipelined_behind_a_request_and_early_tunnel_bytes(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        # one packet: a request, an upgrade request queued behind it, and tunnel bytes
        # sent before the 101 (they wait for it, then go upstream first)
        c.send(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n"
               b"GET /upgrade-count HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n" + b"y" * 1000)
        first = c.read_response()
        assert first.status == 200 and first.json()["path"] == "/first"
        assert c.read_response().status == 101
        c.send(b"z" * 500)
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read_until_closed() == b"got 1500 bytes"


def test_websocket_upgrade_with_a_body_is_a_plain_request(upstream, porch):
    # RFC 6455's handshake has no body: one that has is not switched, it is passed on
    # (body included) as a plain request, and the connection carries on.
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        c.send(b"POST /form HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello"
               b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        doc = r.json()
        assert doc["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert not {k.lower() for k, _ in doc["headers"]} & {"upgrade", "connection"}
        assert c.read_response().json()["path"] == "/after"
