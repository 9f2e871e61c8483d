"""Proxying basics: methods, bodies, Host, site and route selection, balancing, framing."""

from __future__ import annotations

import collections
import hashlib
import os

import httpx

from .helpers import RawConn, assert_short_error_body, curl_fetch, get, refused_port, resolve
from .upstreams import pattern_bytes


def one_site(up_url: str, host: str = "app.test", extra: str = "") -> str:
    return f'[[site]]\nhosts = ["{host}"]\nproxy = "{up_url}"\n{extra}'


def headers_named(doc: dict, name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def test_get_and_post_with_curl(upstream, porch, tmp_path):
    up = upstream()
    p = porch(one_site(up.url))
    r = curl_fetch(f"http://app.test:{p.port}/hello/world?x=1&y=2", *resolve("app.test", p.port))
    assert (r.rc, r.status) == (0, 200)
    doc = r.json()
    assert doc["method"] == "GET"
    assert doc["target"] == "/hello/world?x=1&y=2"
    assert doc["server_port"] == up.port

    payload = os.urandom(300_000)
    (tmp_path / "payload").write_bytes(payload)
    r = curl_fetch(f"http://app.test:{p.port}/upload", *resolve("app.test", p.port),
                   "--data-binary", f"@{tmp_path / 'payload'}",
                   "-H", "Content-Type: application/octet-stream")
    assert (r.rc, r.status) == (0, 200)
    doc = r.json()
    assert doc["method"] == "POST"
    assert doc["body_length"] == len(payload)
    assert doc["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_get_put_post_with_httpx(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url))
    with httpx.Client(base_url=p.url, headers={"Host": "app.test"}, timeout=10) as client:
        r = client.get("/json", params={"q": "a b"})
        assert r.status_code == 200
        assert r.json()["target"] == "/json?q=a+b"
        body = os.urandom(70_000)
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = client.request(method, "/item/1", content=body)
            assert r.status_code == 200, method
            doc = r.json()
            assert doc["method"] == method
            assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_host_header_preserved(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url))
    r = curl_fetch(f"http://app.test:{p.port}/", *resolve("app.test", p.port))
    assert r.status == 200
    assert headers_named(r.json(), "Host") == [f"app.test:{p.port}"]


def test_upstream_host_overrides_host(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url, extra='upstream_host = "backend.internal"\n'))
    r = curl_fetch(f"http://app.test:{p.port}/", *resolve("app.test", p.port))
    assert r.status == 200
    assert headers_named(r.json(), "Host") == ["backend.internal"]


def test_no_matching_site_is_404(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url))
    r = curl_fetch(f"{p.url}/", "-H", "Host: other.test")
    assert r.status == 404
    assert_short_error_body(r.body)
    assert up.stats()["requests"] == 0


def test_catch_all_site_takes_unmatched_hosts(upstream, porch):
    named, fallback = upstream(), upstream()
    p = porch(one_site(named.url) + f'\n[[site]]\nproxy = "{fallback.url}"\n')
    r = curl_fetch(f"{p.url}/", "-H", "Host: other.test")
    assert r.status == 200
    assert r.json()["server_port"] == fallback.port
    r = curl_fetch(f"{p.url}/", "-H", "Host: app.test")
    assert r.json()["server_port"] == named.port


def test_exact_host_beats_wildcard(upstream, porch):
    wild, exact = upstream(), upstream()
    p = porch(f'[[site]]\nhosts = ["*.example.org"]\nproxy = "{wild.url}"\n\n'
              f'[[site]]\nhosts = ["app.example.org"]\nproxy = "{exact.url}"\n')
    for host, want in [("app.example.org", exact.port), ("other.example.org", wild.port),
                       ("APP.Example.Org", exact.port)]:
        r = curl_fetch(f"{p.url}/", "-H", f"Host: {host}")
        assert r.status == 200, host
        assert r.json()["server_port"] == want, host


def test_longest_path_prefix_wins(upstream, porch):
    root, api, v2 = upstream(), upstream(), upstream()
    # Declared in an order where "first match" and "longest match" disagree.
    p = porch(f"""
[[site]]
hosts = ["app.test"]
  [[site.route]]
  path = "/api/"
  proxy = "{api.url}"
  [[site.route]]
  path = "/"
  proxy = "{root.url}"
  [[site.route]]
  path = "/api/v2/"
  proxy = "{v2.url}"
""")
    cases = {"/api/v2/users": v2.port, "/api/users": api.port, "/api/v2/": v2.port,
             "/apix": root.port, "/": root.port, "/other/api/v2/": root.port}
    for path, want in cases.items():
        r = curl_fetch(f"{p.url}{path}", "-H", "Host: app.test")
        assert r.status == 200, path
        assert r.json()["server_port"] == want, path
        assert r.json()["path"] == path


def test_round_robin_skips_refused_target(upstream, porch):
    a, b = upstream(), upstream()
    dead = refused_port()
    p = porch(f'[[site]]\nhosts = ["app.test"]\n'
              f'proxy = ["{a.url}", "http://127.0.0.1:{dead}", "{b.url}"]\n')
    seen = collections.Counter()
    for i in range(12):
        r = curl_fetch(f"{p.url}/rr/{i}", "-H", "Host: app.test")
        assert r.status == 200, f"request {i} got {r.status}: {r.body[:200]!r}"
        seen[r.json()["server_port"]] += 1
    assert set(seen) == {a.port, b.port}
    assert min(seen.values()) >= 4, seen


def test_head_has_no_body(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url))
    r = curl_fetch(f"{p.url}/stream?size=12345", "-I", "-H", "Host: app.test")
    assert (r.rc, r.status) == (0, 200)
    assert r.header("Content-Length") == "12345"
    # curl -I writes the head where the body would go: nothing may follow it
    assert r.body.endswith(b"\r\n\r\n") and r.body.count(b"\r\n\r\n") == 1, r.body[-200:]
    # On one connection: if any byte of body followed the HEAD response, the next
    # response would not parse.
    with RawConn(p.port) as c:
        c.send(b"HEAD /stream?size=12345 HTTP/1.1\r\nHost: app.test\r\n\r\n"
               + get("/after-head"))
        head = c.read_response(head_request=True)
        assert head.status == 200
        assert head.header("Content-Length") == "12345"
        nxt = c.read_response()
        assert nxt.status == 200
        assert nxt.json()["path"] == "/after-head"


def test_204_and_304_have_no_body(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url))
    with RawConn(p.port) as c:
        c.send(get("/status/204") + get("/status/304") + get("/after"))
        for status in (204, 304):
            r = c.read_response()
            assert r.status == status
            assert r.header("Transfer-Encoding") is None, f"{status} with Transfer-Encoding"
        r = c.read_response()
        assert r.status == 200
        assert r.json()["path"] == "/after"


def test_chunked_request_body_forwarded(upstream, porch, tmp_path):
    up = upstream()
    p = porch(one_site(up.url))
    payload = os.urandom(1_500_000)
    (tmp_path / "payload").write_bytes(payload)
    r = curl_fetch(f"{p.url}/chunked-upload", "-H", "Host: app.test",
                   "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{tmp_path / 'payload'}")
    assert (r.rc, r.status) == (0, 200)
    doc = r.json()
    assert doc["body_length"] == len(payload)
    assert doc["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_chunked_response_streamed_whole(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url))
    for query in ("size=300000", "size=300000&trailers=1"):
        r = curl_fetch(f"{p.url}/chunked?{query}", "-H", "Host: app.test")
        assert (r.rc, r.status) == (0, 200), query
        assert r.body == bytes(pattern_bytes(0, 300000)), query


def test_no_length_response_streamed_whole(upstream, porch):
    up = upstream()
    p = porch(one_site(up.url))
    for query in ("size=250000", "size=250000&v=1.0"):
        r = curl_fetch(f"{p.url}/no-length?{query}", "-H", "Host: app.test")
        assert (r.rc, r.status) == (0, 200), query
        assert r.body == bytes(pattern_bytes(0, 250000)), query


def test_expect_100_continue(upstream, porch, tmp_path):
    up = upstream()
    p = porch(one_site(up.url))
    payload = os.urandom(2_000_000)
    (tmp_path / "payload").write_bytes(payload)
    # curl waits up to --expect100-timeout for "100 Continue" before sending the body
    # anyway: 10 s makes a proxy that never says 100 Continue visible as a slow request.
    r = curl_fetch(f"{p.url}/expect", "-v", "-H", "Host: app.test", "-H", "Expect: 100-continue",
                   "--expect100-timeout", "10", "--data-binary", f"@{tmp_path / 'payload'}")
    assert (r.rc, r.status) == (0, 200)
    assert "100 Continue" in r.stderr
    assert r.elapsed < 5, f"took {r.elapsed:.1f}s: 100 Continue never came?"
    doc = r.json()
    assert doc["body_length"] == len(payload)
    assert doc["body_sha256"] == hashlib.sha256(payload).hexdigest()
