"""nginx's auth_request as Authelia's guide writes it, served by Debian's nginx and by
`porch run -c` on the same file (Porch reads it as forward_auth): the same auth
service (tests/integration/authservice.py) and echo upstream behind both, the same
raw requests, the same answers and the same user at the upstream, but for the
intended differences below."""

from __future__ import annotations

import subprocess

import pytest

from .helpers import PORCH_BIN, Upstream
from .test_forward_auth import GOOD, AuthService, header
from .differential import Pair, req
from .test_nginx_differential import serve

AUTHELIA = """
server {
    listen 127.0.0.1:PORT;
    server_name app.test;

    location / {
        auth_request /internal/authelia;
        auth_request_set $user $upstream_http_remote_user;
        auth_request_set $groups $upstream_http_remote_groups;
        proxy_set_header Remote-User $user;
        proxy_set_header Remote-Groups $groups;
        proxy_pass http://UPSTREAM;
    }

    location = /internal/authelia {
        internal;
        proxy_pass http://AUTH/api/verify;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    }
}
"""

INTENDED = {
    "login-redirect": "an answer of the service other than 2xx, 401 and 403 is a 500 in nginx (its"
    " guides turn 401 into the login redirect with error_page); Porch passes it to the client as"
    " Traefik's ForwardAuth and Caddy's forward_auth do, so the service's 302 to its login page works"
    " without an error_page line",
}


@pytest.fixture
def pair(procs, tmp_path, upstream) -> tuple[Pair, AuthService]:
    auth = AuthService(procs, tmp_path)
    up: Upstream = upstream()
    text = AUTHELIA.replace("AUTH", f"127.0.0.1:{auth.port}")
    return serve(procs, tmp_path, text, up), auth


def both(pair: Pair, request: bytes) -> dict[str, tuple[int, dict, dict | None]]:
    return {name: pair.ask(port, request) for name, port in (("nginx", pair.reference), ("porch", pair.porch))}


def user_seen(seen: dict | None) -> tuple[list[str], list[str]] | None:
    if seen is None:
        return None
    return header(seen, "Remote-User"), header(seen, "Remote-Groups")


SAME = [
    req("GET", "/app?x=1", "app.test", f"Cookie: {GOOD}\r\n"),
    req("POST", "/form", "app.test", f"Cookie: {GOOD}\r\nContent-Type: text/plain\r\n", b"a=1"),
    # a client's own identity fields: replaced by the service's (both)
    req("GET", "/", "app.test", f"Cookie: {GOOD}\r\nRemote-User: bob\r\nRemote-Groups: root\r\n"),
    req("GET", "/", "app.test"),  # no session, not a browser: the service's 401
    req("GET", "/", "app.test", "Cookie: session=stolen\r\nRemote-User: alice\r\n"),
]


@pytest.mark.parametrize("request_bytes", SAME, ids=lambda r: r.split(b"\r\n")[0].decode() + str(len(r)))
def test_authelia_auth_request_same_as_nginx(pair, request_bytes: bytes) -> None:
    p, auth = pair
    out = both(p, request_bytes)
    (n_status, n_headers, n_seen), (p_status, p_headers, p_seen) = out["nginx"], out["porch"]
    assert p_status == n_status, out
    assert user_seen(p_seen) == user_seen(n_seen), out
    if n_status == 401:  # nginx passes the service's WWW-Authenticate with a 401
        assert p_headers.get("www-authenticate") == n_headers.get("www-authenticate")
        assert p_seen is None and n_seen is None  # the app never saw the request
    # both asked the service at the same path, with the client's cookie
    asked = auth.requests()[-2:]
    assert [r["path"] for r in asked] == ["/api/verify", "/api/verify"], asked


def test_browser_without_session_is_the_intended_difference(pair) -> None:
    p, _ = pair
    out = both(p, req("GET", "/page", "app.test", "Accept: text/html\r\n"))
    assert out["nginx"][0] == 500  # nginx: a 302 from the subrequest is an error
    status, headers, seen = out["porch"]
    assert (status, seen) == (302, None), out["porch"]
    assert headers["location"].startswith("https://auth.test/?rd=")
    assert "login-redirect" in INTENDED


def test_convert_prints_forward_auth_from_the_auth_location(tmp_path) -> None:
    site = tmp_path / "authelia.conf"
    site.write_text(AUTHELIA.replace("PORT", "8080").replace("UPSTREAM", "127.0.0.1:3000")
                    .replace("AUTH", "127.0.0.1:9091"))
    out = subprocess.run([str(PORCH_BIN), "convert", str(site)], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert 'url = "http://127.0.0.1:9091/api/verify"' in out.stdout, out.stdout
    assert 'copy_headers = ["Remote-User", "Remote-Groups"]' in out.stdout, out.stdout
    assert "/internal/authelia" not in out.stdout.split("# ")[0]  # the internal location is no route


def test_auth_request_to_a_location_without_proxy_pass_names_the_fix(tmp_path) -> None:
    site = tmp_path / "bad.conf"
    site.write_text("server {\n listen 8080;\n server_name app.test;\n location /app/ {\n"
                    "  auth_request /auth;\n  proxy_pass http://127.0.0.1:3000;\n }\n}\n")
    out = subprocess.run([str(PORCH_BIN), "check", "-c", str(site)], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 1
    assert "bad.conf:5: auth_request: /auth: no location of this server takes it; add location = /auth" in out.stderr + out.stdout
