"""basic_auth (policies/basic_auth.py) with real peers, over HTTP/1.1 (raw sockets, curl)
and HTTP/2 (curl --http2, h2client.py): the 401 challenge, the user reaching a real
upstream in user_header, pass_authorization = false, a route turning it off, identity
fields dropped on every route in every spelling, the password file re-read, checks
that do not stall the loop, and the failed-login throttle."""

from __future__ import annotations

import base64
import json
import re
import subprocess

import bcrypt
import pytest

from .h2client import H2Client
from .helpers import RawConn, curl_fetch, free_port, resolve, wait_for_port, wait_until
from .test_h2 import H2_ENGINES

HOST = "app.test"
REALM = "Porch test"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'


def write_users(path, cost: int = 4, **users: str) -> None:
    """alice gets bcrypt ($2y$, off the loop), bob Apache's $apr1$ (htpasswd -m), carol {SHA}."""
    lines = []
    for user, password in users.items():
        if user == "bob":
            made = subprocess.run(["htpasswd", "-nbm", user, password], check=True, capture_output=True,
                                  text=True).stdout.strip()
            lines.append(made)
        elif user == "carol":
            made = subprocess.run(["htpasswd", "-nbs", user, password], check=True, capture_output=True,
                                  text=True).stdout.strip()
            lines.append(made)
        else:
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
            lines.append(f"{user}:$2y${hashed[4:]}")
    path.write_text("\n".join(lines) + "\n")


def config(up_url: str, htpasswd, tls: str = "off") -> str:
    return f"""
[[site]]
hosts = ["{HOST}"]
tls = "{tls}"
redirect_http = false
basic_auth = {{ htpasswd = "{htpasswd}", realm = "{REALM}", user_header = "X-Auth-User" }}
  [[site.route]]
  path = "/"
  proxy = "{up_url}"
  [[site.route]]
  path = "/public/"
  proxy = "{up_url}"
  basic_auth = false
  [[site.route]]
  path = "/quiet/"
  proxy = "{up_url}"
  basic_auth = {{ htpasswd = "{htpasswd}", realm = "{REALM}", user_header = "X-Remote-User", pass_authorization = false }}
"""


def basic(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


def values(doc: dict, name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "htpasswd"
    write_users(path, alice="wonder land", bob="builder", carol="sea shell")
    return path


def get(port: int, path: str, *fields: str) -> object:
    with RawConn(port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{''.join(f + chr(13) + chr(10) for f in fields)}\r\n"
               .encode())
        return c.read_response()


# The spellings a client may try, and what CGI/WSGI servers (Radicale's) read them as.
FORGED = ("X-Remote-User: mallory", "x-remote-user: mallory", "REMOTE-USER: mallory", "X_Remote_User: mallory",
          "Remote_User: mallory", "X-Forwarded-User: mallory", "X-Auth-Request-User: mallory",
          "X-Auth-User: mallory", "x_auth_user: mallory", "X-AUTH-USER: mallory")
IDENTITY = ("X-Remote-User", "Remote-User", "X-Forwarded-User", "X-Auth-Request-User", "X-Auth-User")


def test_challenge_then_the_user_reaches_the_upstream_over_http1(porch, upstream, users):
    up = upstream()
    p = porch(config(up.url, users))
    r = get(p.port, "/x")
    assert r.status == 401 and r.header_all("WWW-Authenticate") == [CHALLENGE]
    assert up.stats()["requests"] == 0
    for who, password in (("alice", "wonder land"), ("bob", "builder"), ("carol", "sea shell")):
        r = get(p.port, "/x", "Authorization: " + basic(who, password), *FORGED)
        assert r.status == 200, (who, r.status, p.error_log_text())
        doc = r.json()
        assert values(doc, "X-Auth-User") == [who]  # ours, the client's in every spelling gone
        assert values(doc, "Authorization") == [basic(who, password)]  # passed by default
        for name in IDENTITY[:-1]:
            assert values(doc, name) == [] and values(doc, name.replace("-", "_")) == []
    lines = p.access_log_lines(4)
    assert re.match(r'127\.0\.0\.1 - - \[.*\] "GET /x HTTP/1\.1" 401 ', lines[0]), lines[0]
    assert re.match(r'127\.0\.0\.1 - alice \[.*\] "GET /x HTTP/1\.1" 200 ', lines[1]), lines[1]


@pytest.mark.parametrize("authorization, cause", [
    (basic("alice", "wonder lanD"), "user 'alice': password mismatch"),
    (basic("bob", "wonder land"), "user 'bob': password mismatch"),
    (basic("mallory", "x"), "user 'mallory' is not in"),
    ("Basic !!!notbase64", "Basic credentials are not base64"),
    ("Basic " + base64.b64encode(b"alice").decode(), "without a colon"),
    ("Bearer abc.def", None),  # another scheme: asked for Basic, nothing to log
])
def test_wrong_unknown_and_malformed_credentials_get_401(porch, upstream, users, authorization, cause):
    up = upstream()
    p = porch(config(up.url, users))
    r = get(p.port, "/x", "Authorization: " + authorization)
    assert r.status == 401 and r.header("WWW-Authenticate") == CHALLENGE
    assert up.stats()["requests"] == 0
    if cause:
        assert cause in p.error_log_text(wait_for=re.escape(cause))


def test_the_scheme_word_in_any_case(porch, upstream, users):
    up = upstream()
    p = porch(config(up.url, users))
    for scheme in ("basic", "BASIC", "bAsIc"):
        assert get(p.port, "/x", "Authorization: " + basic("alice", "wonder land", scheme)).status == 200


def test_pass_authorization_false_and_a_route_without_auth(porch, upstream, users):
    up = upstream()
    p = porch(config(up.url, users))
    r = get(p.port, "/quiet/x", "Authorization: " + basic("alice", "wonder land"), *FORGED)
    assert r.status == 200
    doc = r.json()
    assert values(doc, "Authorization") == []
    assert values(doc, "X-Remote-User") == ["alice"]
    assert values(doc, "X-Auth-User") == []  # the other route's user_header: still a client's forgery
    r = get(p.port, "/public/x", *FORGED)  # no auth here, and no identity from the client either
    assert r.status == 200
    doc = r.json()
    for name in IDENTITY:
        assert values(doc, name) == [] and values(doc, name.replace("-", "_")) == [], name


def test_the_password_file_is_re_read_when_it_changes(porch, upstream, users):
    up = upstream()
    p = porch(config(up.url, users))
    assert get(p.port, "/x", "Authorization: " + basic("alice", "wonder land")).status == 200
    write_users(users, alice="new one")
    # Looked at once a second: a few tries (each a failure, under the throttle's 10) until it is.
    assert wait_until(lambda: get(p.port, "/x", "Authorization: " + basic("alice", "new one")).status == 200,
                      timeout=5, interval=0.4)
    # the old password is gone, although it was checked a moment ago (the cache is keyed by the entry)
    assert get(p.port, "/x", "Authorization: " + basic("alice", "wonder land")).status == 401


def test_a_bcrypt_check_does_not_stall_other_requests(porch, upstream, tmp_path):
    """Cost 13: a check takes most of a second.  A request on another connection is answered meanwhile."""
    path = tmp_path / "htpasswd"
    write_users(path, cost=13, alice="slow")
    up = upstream()
    p = porch(config(up.url, path))
    with RawConn(p.port, timeout=60) as slow:
        slow.send(f"GET /x HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {basic('alice', 'slow')}\r\n\r\n".encode())
        assert get(p.port, "/public/x").status == 200
        slow.sock.setblocking(False)
        try:
            early = slow.sock.recv(100)
        except BlockingIOError:
            early = b""
        assert early == b"", "the check finished first: it was not a slow one"
        slow.sock.setblocking(True)
        assert slow.read_response().status == 200
        # now remembered: answered without a second check of seconds
        slow.send(f"GET /x HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {basic('alice', 'slow')}\r\n\r\n".encode())
        slow.sock.settimeout(1.0)
        assert slow.read_response().status == 200


def test_ten_failures_then_429_for_a_minute_logged_once(porch, upstream, users):
    up = upstream()
    p = porch(config(up.url, users))
    statuses = [get(p.port, "/x", "Authorization: " + basic("alice", f"guess {i}")).status for i in range(10)]
    assert statuses == [401] * 10
    r = get(p.port, "/x", "Authorization: " + basic("alice", "wonder land"))  # even the right one
    assert r.status == 429
    assert 55 <= int(r.header("Retry-After")) <= 60
    assert get(p.port, "/quiet/x").status == 429  # every basic_auth of the load counts together
    assert get(p.port, "/public/x").status == 200  # what needs no login is still served
    log = p.error_log_text(wait_for="failed logins")
    assert log.count("10 failed logins from 127.0.0.1 within 60s: answered 429 for 60s") == 1, log
    assert up.stats()["requests"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_the_throttle_counts_across_workers(porch, upstream, users, workers):
    """One client, a new connection per guess (SO_REUSEPORT spreads them over the
    workers): throttled at the 10th failure whatever the number of workers.  With a
    count per worker, two workers would answer ~20 guesses with 401 before a 429."""
    up = upstream()
    p = porch(config(up.url, users), workers=workers)
    p.wait_workers(workers)
    statuses = [get(p.port, "/x", "Authorization: " + basic("carol", f"guess {i}")).status for i in range(20)]
    assert statuses == [401] * 10 + [429] * 10, statuses
    log = p.error_log_text(wait_for="failed logins")
    assert log.count("10 failed logins from 127.0.0.1 within 60s") == 1, log
    assert up.stats()["requests"] == 0


def test_acme_challenges_need_no_login_and_are_not_throttled(porch, upstream, users, tmp_path):
    """HTTP-01 validation requests are exempt (RFC 8555 8.3: the CA does not log in),
    also from a client the login throttle has blocked."""
    up = upstream()
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    challenges = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / token).write_text("keyauth")
    p = porch(config(up.url, users).replace(
        'redirect_http = false\n', f'redirect_http = false\nacme_challenge = {{ webroot = "{tmp_path / "webroot"}" }}\n'))
    challenge = f"/.well-known/acme-challenge/{token}"
    r = get(p.port, challenge)
    assert (r.status, r.body) == (200, b"keyauth")
    assert [get(p.port, "/x", "Authorization: " + basic("carol", f"guess {i}")).status for i in range(11)] \
        == [401] * 10 + [429]
    r = get(p.port, challenge)
    assert (r.status, r.body) == (200, b"keyauth")


# -- HTTP/2 ----------------------------------------------------------------------------


@pytest.fixture(params=H2_ENGINES)  # both HTTP/2 engines, as test_h2.py
def h2_porch(porch, upstream, users, request):
    up = upstream()
    https_port = free_port()
    p = porch(config(up.url, users, tls="internal"), https_port=https_port, tls="internal",
              http2_engine=request.param)
    wait_for_port(https_port, p.managed, what="porch https")
    return p, https_port


def curl2(port: int, path: str, *args: str):
    r = curl_fetch(f"https://{HOST}:{port}{path}", "--http2", "-k", *resolve(HOST, port), *args)
    assert r.rc == 0, r.stderr
    return r


def test_over_http2_with_curl(h2_porch):
    p, port = h2_porch
    r = curl2(port, "/x")
    assert r.status == 401 and r.header("www-authenticate") == CHALLENGE
    r = curl2(port, "/x", "-u", "alice:wonder land", "-H", "X-Auth-User: mallory", "-H", "x-remote-user: mallory")
    assert r.status == 200
    assert values(r.json(), "X-Auth-User") == ["alice"] and values(r.json(), "X-Remote-User") == []
    r = curl2(port, "/quiet/x", "-u", "bob:builder")
    assert r.status == 200 and values(r.json(), "Authorization") == []
    assert values(r.json(), "X-Remote-User") == ["bob"]
    assert curl2(port, "/x", "-u", "bob:wrong").status == 401


def test_identity_fields_in_every_spelling_over_http2(h2_porch):
    """Raw HTTP/2 header blocks (h2client.py): lowercase names, "_" for "-"."""
    p, port = h2_porch
    forged = [(name.split(":")[0].lower(), "mallory") for name in FORGED]
    auth = ("authorization", basic("alice", "wonder land"))
    with H2Client(port, HOST) as c:
        for path, extra in (("/x", [auth]), ("/public/x", []), ("/quiet/x", [auth])):
            sid = c.request(path, headers=[*extra, *forged])
            c.pump(lambda: c.streams[sid].done)
            result = c.streams[sid]
            assert result.status == 200, (path, result)
            doc = json.loads(bytes(result.data))
            got = {k.lower().replace("_", "-"): v for k, v in doc["headers"]}
            assert "mallory" not in got.values(), (path, doc["headers"])
    assert got.get("x-remote-user") == "alice"


def test_throttle_over_http2(h2_porch):
    p, port = h2_porch
    with H2Client(port, HOST) as c:
        for i in range(10):
            sid = c.request("/x", headers=[("authorization", basic("carol", f"guess {i}"))])
            c.pump(lambda: c.streams[sid].done)
            assert c.streams[sid].status == 401
        sid = c.request("/x", headers=[("authorization", basic("carol", "sea shell"))])
        c.pump(lambda: c.streams[sid].done)
        assert c.streams[sid].status == 429 and c.streams[sid].header(b"retry-after")


def test_a_401_keeps_the_connection_for_the_retry(porch, upstream, users):
    """A 401 leaves the connection usable (keep-alive): a browser retries on it."""
    up = upstream()
    p = porch(config(up.url, users))
    with RawConn(p.port) as c:
        c.send(f"GET /x HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert c.read_response().status == 401
        c.send(f"GET /x HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {basic('carol', 'sea shell')}\r\n\r\n".encode())
        assert c.read_response().status == 200
