"""rate_limit (policies/rate_limit.py) with real clients: 429 and Retry-After over
HTTP/1.1 and HTTP/2, delays spread at the rate without nodelay, one count across
two workers, ACME challenges exempt, and the same answers as Debian's nginx to the
same requests under `limit_req ... burst=20 nodelay` at 10r/s."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .h2client import H2Client
from .helpers import RawConn, free_port, site, wait_for_port

HOST = "app.test"
LIMIT = 'rate_limit = { rate = "10r/s", burst = 20, nodelay = true }\n'


def pipelined(port: int, n: int, host: str = HOST) -> list[int]:
    """`n` GETs written at once on one connection; the statuses in order."""
    with RawConn(port, timeout=15) as c:
        c.send(b"".join(f"GET /r{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for i in range(n)))
        return [c.read_response().status for _ in range(n)]


def separate(port: int, n: int, host: str = HOST) -> list[int]:
    """`n` connections opened first, then one GET written on each, all at once."""
    conns = [RawConn(port, timeout=15) for _ in range(n)]
    try:
        for i, c in enumerate(conns):
            c.send(f"GET /c{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return [c.read_response().status for c in conns]
    finally:
        for c in conns:
            c.close()


def test_429_with_retry_after_over_http1(porch, upstream):
    up = upstream()
    p = porch(site(up.url, 'rate_limit = { rate = "1r/s", burst = 2, nodelay = true }\n'))
    with RawConn(p.port) as c:
        c.send(b"".join(f"GET /x HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() for _ in range(5)))
        responses = [c.read_response() for _ in range(5)]
        assert [r.status for r in responses] == [200, 200, 200, 429, 429]
        assert responses[3].header("Retry-After") == "1"
        c.send(f"GET /x HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())  # the connection goes on
        assert c.read_response().status == 429
    assert up.stats()["requests"] == 3
    log = p.error_log_text(wait_for="limiting requests")
    assert log.count("limiting requests of '127.0.0.1'") == 1, log  # once, not per rejection


def test_429_over_http2(porch, upstream):
    up = upstream()
    https_port = free_port()
    p = porch(site(up.url, 'tls = "internal"\nredirect_http = false\n'
                           'rate_limit = { rate = "1r/s", burst = 2, nodelay = true, status = 503 }\n'),
              https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")
    with H2Client(https_port, HOST) as h2:
        sids = [h2.request("/x") for _ in range(5)]
        results = [h2.response(sid) for sid in sids]
    assert sorted(r.status for r in results) == [200, 200, 200, 503, 503]
    refused = [r for r in results if r.status == 503]
    assert all(r.header(b"retry-after") == b"1" for r in refused)


def test_delayed_streams_over_http2(porch, upstream):
    """Without nodelay, streams of one connection wait their turn at the rate, each
    on its own: 5 streams at 5r/s burst 4 end over ~0.8 s, all answered."""
    up = upstream()
    https_port = free_port()
    p = porch(site(up.url, 'tls = "internal"\nredirect_http = false\n'
                           'rate_limit = { rate = "5r/s", burst = 4 }\n'),
              https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")
    with H2Client(https_port, HOST, timeout=15) as h2:
        start = time.monotonic()
        sids = [h2.request(f"/s{i}") for i in range(5)]
        h2.pump(lambda: all(h2.streams[sid].done for sid in sids), timeout=15)
        elapsed = time.monotonic() - start
        assert [h2.streams[sid].status for sid in sids] == [200] * 5
    assert elapsed >= 0.75, elapsed


def test_nodelay_answers_at_once_and_without_it_requests_are_spread_at_the_rate(porch, upstream):
    up = upstream()
    config = site(up.url, 'rate_limit = { rate = "5r/s", burst = 4 }\n') + site(
        up.url, 'rate_limit = { rate = "5r/s", burst = 4, nodelay = true }\n', host="fast.test")
    p = porch(config)

    def timings(host: str) -> list[float]:
        start = time.monotonic()
        with ThreadPoolExecutor(5) as pool:
            def one(i: int) -> tuple[int, float]:
                with RawConn(p.port, timeout=15) as c:
                    c.send(f"GET /d{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                    return c.read_response().status, time.monotonic() - start
            done = list(pool.map(one, range(5)))
        assert [s for s, _ in done] == [200] * 5
        return sorted(t for _, t in done)

    slow = timings(HOST)
    # excess 0, 1000 ... 4000 milli-requests at 5r/s: ready at 0, 0.2, 0.4, 0.6, 0.8 s
    assert slow[-1] >= 0.75, slow
    assert slow[0] < 0.5 and slow[-1] - slow[1] >= 0.55, slow  # spread, not all at the end
    fast = timings("fast.test")
    assert fast[-1] < 0.5, fast


def test_acme_challenges_pass_rate_limits_and_address_rules(porch, upstream, tmp_path):
    up = upstream()
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    challenges = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / token).write_text("keyauth")
    p = porch(site(up.url, f'acme_challenge = {{ webroot = "{tmp_path / "webroot"}" }}\n'
                           'rate_limit = { rate = "1r/m", nodelay = true }\n'
                           'allow = ["192.0.2.0/24"]\n'))
    assert pipelined(p.port, 1) == [403]  # 127.0.0.1 is not allowed
    with RawConn(p.port) as c:
        for _ in range(10):
            c.send(f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            r = c.read_response()
            assert (r.status, r.body) == (200, b"keyauth")


# -- one count across workers ----------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_one_client_on_many_connections_gets_the_same_count_with_two_workers(porch, upstream, workers):
    """40 connections, spread by SO_REUSEPORT over the workers, one request each: 21
    pass (burst 20 + the first) whatever the number of workers.  At 10r/m nothing
    leaks during the test; with a table per worker, two workers would let 40 pass."""
    up = upstream()
    p = porch(site(up.url, 'rate_limit = { rate = "10r/m", burst = 20, nodelay = true }\n'),
              workers=workers)
    p.wait_workers(workers)
    statuses = separate(p.port, 40)
    assert statuses.count(200) == 21 and statuses.count(429) == 19, statuses
    assert up.stats()["requests"] == 21


# -- side by side with nginx -------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    limit_req_zone $binary_remote_addr zone=one:1m rate=10r/s;
    limit_req_status 429;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=one burst=20 nodelay;
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@pytest.fixture
def nginx(procs, tmp_path):
    """Debian's nginx on a free port in front of `upstream_url`, one process."""
    def start(upstream_url: str) -> int:
        d = tmp_path / "nginx"
        d.mkdir()
        port = free_port()
        (d / "nginx.conf").write_text(NGINX_CONF.format(dir=d, port=port, upstream=upstream_url))
        managed = procs.start(["nginx", "-p", str(d), "-c", str(d / "nginx.conf"),
                               "-g", "daemon off; master_process off;"], cwd=d, name="nginx")
        wait_for_port(port, managed, what="nginx")
        return port
    return start


def after_idle(port: int) -> None:
    """One request, then 2.2 s of nothing: the bucket is empty again (10r/s leaks 22)."""
    pipelined(port, 1)
    time.sleep(2.2)


def test_forty_pipelined_requests_answered_as_nginx_answers_them(porch, upstream, nginx):
    up = upstream()
    nginx_port = nginx(up.url)
    p = porch(site(up.url, LIMIT.replace("nodelay = true", "nodelay = true, zone = \"one\"")))
    after_idle(nginx_port)
    theirs = pipelined(nginx_port, 40)
    after_idle(p.port)
    ours = pipelined(p.port, 40)
    assert theirs == [200] * 21 + [429] * 19, theirs
    assert ours == theirs


def test_forty_connections_answered_as_nginx_answers_them(porch, upstream, nginx):
    up = upstream()
    nginx_port = nginx(up.url)
    p = porch(site(up.url, LIMIT))
    after_idle(nginx_port)
    theirs = separate(nginx_port, 40)
    after_idle(p.port)
    ours = separate(p.port, 40)
    assert sorted(theirs) == [200] * 21 + [429] * 19, theirs
    assert sorted(ours) == sorted(theirs)


# -- other keys ----------------------------------------------------------------------------

def test_keyed_on_an_api_key_header_and_on_the_user(porch, upstream, tmp_path):
    """key = "header:X-Api-Key": a bucket per key, a request without one not limited;
    key = "user": a bucket per user basic_auth let in (one client address for all)."""
    import base64
    import subprocess
    up = upstream()
    users = tmp_path / "htpasswd"
    users.write_text("".join(subprocess.run(["htpasswd", "-nbs", u, "pw"], check=True, capture_output=True,
                                            text=True).stdout.strip() + "\n" for u in ("alice", "bob")))
    p = porch(f"""
[[site]]
hosts = ["{HOST}"]
proxy = "{up.url}"
  [[site.route]]
  path = "/api/"
  proxy = "{up.url}"
  rate_limit = {{ rate = "1r/m", nodelay = true, key = "header:X-Api-Key" }}
  [[site.route]]
  path = "/dav/"
  proxy = "{up.url}"
  basic_auth = {{ htpasswd = "{users}" }}
  rate_limit = {{ rate = "1r/m", nodelay = true, key = "user" }}
""")

    def get(path: str, *fields: str) -> int:
        with RawConn(p.port) as c:
            c.send(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{''.join(f + chr(13) + chr(10) for f in fields)}\r\n"
                   .encode())
            return c.read_response().status

    assert [get("/api/x", "X-Api-Key: A") for _ in range(2)] == [200, 429]
    assert get("/api/x", "X-Api-Key: B") == 200
    assert [get("/api/x") for _ in range(3)] == [200] * 3  # no key: not limited, as nginx
    auth = {u: "Authorization: Basic " + base64.b64encode(f"{u}:pw".encode()).decode() for u in ("alice", "bob")}
    assert [get("/dav/x", auth["alice"]) for _ in range(2)] == [200, 429]
    assert get("/dav/x", auth["bob"]) == 200
    assert get("/dav/x") == 401  # authentication first: no user, no bucket spent
