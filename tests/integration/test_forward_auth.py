"""forward_auth (policies/forward_auth.py) with real peers: a small auth service that
behaves as Authelia (tests/integration/authservice.py), the echo upstream, raw HTTP/1.1
sockets and curl over HTTP/2: what passes, what is refused and how, what the service
is told, and that a service down or hanging is never an open door."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .helpers import (HERE, PYTHON, RawConn, curl_fetch, free_port, refused_port, resolve,
                      wait_for_port)

HOST = "app.test"
GOOD = "session=alice-ok"


class AuthService:
    """authservice.py as a process; `requests()` is what it was asked, in order."""

    def __init__(self, procs, workdir: Path, hang: bool = False) -> None:
        self.port = free_port()
        self.log = workdir / f"auth-{self.port}.jsonl"
        argv = [PYTHON, str(HERE / "authservice.py"), "--port", str(self.port), "--log", str(self.log)]
        self.managed = procs.start(argv + (["--hang"] if hang else []), cwd=workdir, name=f"auth-{self.port}")
        wait_for_port(self.port, self.managed, what="auth service")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/verify?rd=https%3A%2F%2Fauth.test%2F"

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def header(record: dict, name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


def config(up_url: str, auth_url: str, tls: str = "off", timeout: str = "5s") -> str:
    return f"""
[[site]]
hosts = ["{HOST}"]
tls = "{tls}"
redirect_http = false
forward_auth = {{ url = "{auth_url}", copy_headers = ["Remote-User", "Remote-Groups"], timeout = "{timeout}" }}
request_headers = {{ set = {{ "X-User-Seen" = "[{{remote_user}}]" }} }}
proxy = "{up_url}"
  [[site.route]]
  path = "/public/"
  proxy = "{up_url}"
  forward_auth = false
"""


@pytest.fixture
def auth(procs, tmp_path):
    return AuthService(procs, tmp_path)


def raw_get(port: int, path: str, *fields: str) -> object:
    with RawConn(port) as c:
        c.send((f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n" + "".join(f + "\r\n" for f in fields)
                + "\r\n").encode())
        return c.read_response()


FORGED = ("Remote-User: mallory", "remote_user: mallory", "REMOTE-GROUPS: root", "X-Remote-User: mallory")


def test_http1_pass_through_with_copied_headers_and_no_forgery(porch, upstream, auth):
    up = upstream()
    p = porch(config(up.url, auth.url))
    with RawConn(p.port) as c:
        for i in range(2):  # twice on one client connection: the auth connection is reused
            c.send((f"GET /app/x?q={i} HTTP/1.1\r\nHost: {HOST}\r\nCookie: {GOOD}; theme=dark\r\nX-Other: 1\r\n"
                    + "".join(f + "\r\n" for f in FORGED) + "\r\n").encode())
            r = c.read_response()
            assert r.status == 200, r.body
            doc = r.json()
            sent = lambda name: [v for k, v in doc["headers"] if k.lower() == name.lower()]  # noqa: E731
            assert sent("Remote-User") == ["alice"]
            assert sent("Remote-Groups") == ["admins,dev"]
            assert sent("X-Remote-User") == [] and sent("remote_user") == []
            assert sent("X-User-Seen") == ["[alice]"]  # remote_user for header rules
    asked = auth.requests()
    assert len(asked) == 2
    first = asked[0]
    assert first["method"] == "GET" and first["path"] == "/api/verify?rd=https%3A%2F%2Fauth.test%2F"
    assert header(first, "X-Forwarded-Method") == ["GET"]
    assert header(first, "X-Forwarded-Proto") == ["http"]
    assert header(first, "X-Forwarded-Host") == [HOST]
    assert header(first, "X-Forwarded-Uri") == ["/app/x?q=0"]
    assert header(first, "X-Forwarded-For") == ["127.0.0.1"]
    assert header(first, "X-Original-URL") == [f"http://{HOST}/app/x?q=0"]
    assert header(first, "Cookie") == [f"{GOOD}; theme=dark"]
    assert header(first, "Remote-User") == []  # the client's forgery is not sent there either
    assert header(first, "X-Other") == []  # nor what the service has no use for
    assert header(asked[1], "X-Request-ID") == [r.header("X-Request-ID")]  # the request's id
    assert asked[0]["port"] == asked[1]["port"]  # one keep-alive connection to the service


def test_http1_refusals_pass_back_as_they_are(porch, upstream, auth):
    up = upstream()
    p = porch(config(up.url, auth.url))
    r = raw_get(p.port, "/app/", "Remote-User: alice", "Authorization: Bearer nope")
    assert r.status == 401
    assert r.header("WWW-Authenticate") == 'Basic realm="Authorization Required"'
    assert r.body == b"401 Unauthorized\n"
    assert header(auth.requests()[-1], "Authorization") == ["Bearer nope"]
    r = raw_get(p.port, "/app/page?x=1", "Accept: text/html,application/xhtml+xml")
    assert r.status == 302
    assert r.header("Location") == "https://auth.test/?rd=http%3A%2F%2Fapp.test%2Fapp%2Fpage%3Fx%3D1"
    assert r.header("Set-Cookie") == "authelia_flow=started; Path=/; HttpOnly"
    assert r.header_all("Content-Type") == ["text/html; charset=utf-8"]
    assert r.body == b'<a href="https://auth.test/">Found</a>\n'
    assert up.stats()["requests"] == 0  # nothing reached the app
    # forward_auth = false on /public/: not asked
    before = len(auth.requests())
    r = raw_get(p.port, "/public/x")
    assert r.status == 200 and len(auth.requests()) == before


def test_http2_pass_through_and_refusals(porch, upstream, auth):
    up = upstream()
    https_port = free_port()
    p = porch(config(up.url, auth.url, tls="internal"), https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")

    def get(path: str, *args: str):
        r = curl_fetch(f"https://{HOST}:{https_port}{path}", "--http2", "-k", *resolve(HOST, https_port), *args)
        assert r.rc == 0, r.stderr
        return r

    r = get("/app/x", "-H", f"Cookie: {GOOD}", "-H", "Remote-User: mallory", "-H", "Remote-Groups: root")
    assert r.status == 200
    sent = lambda name: [v for k, v in r.json()["headers"] if k.lower() == name.lower()]  # noqa: E731
    assert sent("Remote-User") == ["alice"] and sent("Remote-Groups") == ["admins,dev"]
    last = auth.requests()[-1]
    assert header(last, "X-Forwarded-Proto") == ["https"]
    assert header(last, "X-Forwarded-Host") == [f"{HOST}:{https_port}"]
    assert header(last, "Cookie") == [GOOD]
    r = get("/app/x")
    assert r.status == 401 and r.header("www-authenticate") == 'Basic realm="Authorization Required"'
    assert r.body == b"401 Unauthorized\n"
    r = get("/app/x", "-H", "Accept: text/html")
    assert r.status == 302 and r.header("location").startswith("https://auth.test/?rd=https%3A%2F%2F")
    assert r.header("set-cookie") == "authelia_flow=started; Path=/; HttpOnly"
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert up.stats()["requests"] == 1


def test_service_down_is_a_quick_502(porch, upstream):
    up = upstream()
    p = porch(config(up.url, f"http://127.0.0.1:{refused_port()}/verify"))
    start = time.monotonic()
    r = raw_get(p.port, "/app/", f"Cookie: {GOOD}", "Remote-User: alice")
    assert r.status == 502 and time.monotonic() - start < 2
    assert up.stats()["requests"] == 0
    assert "forward_auth" in p.error_log_text(wait_for="forward_auth.*connecting failed")


def test_service_hanging_is_a_504_after_the_timeout(porch, upstream, procs, tmp_path):
    up = upstream()
    hanging = AuthService(procs, tmp_path, hang=True)
    p = porch(config(up.url, hanging.url, timeout="1s"))
    start = time.monotonic()
    r = raw_get(p.port, "/app/", f"Cookie: {GOOD}")
    took = time.monotonic() - start
    assert r.status == 504 and 0.9 <= took < 4, took
    assert up.stats()["requests"] == 0
    assert "did not answer within 1s" in p.error_log_text(wait_for="did not answer")


def test_refusals_are_left_to_the_service_to_throttle(porch, upstream, auth):
    """Unlike basic_auth's login throttle, forward_auth answers no 429 of its own: each
    try is asked of the auth service, which owns that policy (Authelia's regulation)."""
    up = upstream()
    p = porch(config(up.url, auth.url))
    before = len(auth.requests())
    statuses = [raw_get(p.port, "/app/", f"Authorization: Bearer guess{i}").status for i in range(15)]
    assert statuses == [401] * 15
    assert len(auth.requests()) == before + 15


def test_acme_challenges_are_not_sent_to_the_auth_service(porch, upstream, tmp_path):
    """HTTP-01 validation requests are exempt (RFC 8555 8.3: the CA does not log in),
    even with the auth service down."""
    up = upstream()
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    challenges = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / token).write_text("keyauth")
    p = porch(config(up.url, f"http://127.0.0.1:{refused_port()}/verify")
              .replace("redirect_http = false\n", f'redirect_http = false\nacme_challenge = {{ webroot = "{tmp_path / "webroot"}" }}\n'))
    r = raw_get(p.port, f"/.well-known/acme-challenge/{token}")
    assert (r.status, r.body) == (200, b"keyauth")
    assert raw_get(p.port, "/app/").status == 502
