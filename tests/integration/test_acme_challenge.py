"""The HTTP-01 responder on plain HTTP: Porch's own tokens from storage, the
"upstream" and webroot modes, and what it refuses (RFC 8555 8.3)."""

from __future__ import annotations

import os

import pytest

from .helpers import RawConn, free_port

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"  # RFC 8555 8.3's example
KEYAUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def get(port: int, host: str, target: str, method: str = "GET"):
    with RawConn(port) as c:
        c.send(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return c.read_response(head_request=method == "HEAD")


def publish(porch, token: str, keyauth: str) -> None:
    """What the ACME manager does: the key authorization under acme/http-01/<token>."""
    d = porch.workdir / "state" / "acme" / "http-01"
    d.mkdir(parents=True, exist_ok=True)
    (d / token).write_text(keyauth)


def site(up, extra: str = "", host: str = "a.example.com") -> str:
    return f'[[site]]\nhosts = ["{host}"]\nproxy = "{up.url}"\n{extra}\n'


@pytest.fixture
def own(porch, upstream):
    up = upstream()
    return porch(site(up, 'tls = "auto"'), acme_ca="https://127.0.0.1:1/dir", https_port=free_port()), up


def test_own_token_answered_from_storage(own):
    p, up = own
    publish(p, TOKEN, KEYAUTH)
    r = get(p.port, "a.example.com", f"/.well-known/acme-challenge/{TOKEN}")
    assert r.status == 200 and r.body == KEYAUTH.encode()
    assert r.header("Content-Type").startswith("text/plain")
    r = get(p.port, "a.example.com", f"/.well-known/acme-challenge/{TOKEN}", "HEAD")
    assert r.status == 200 and r.header("Content-Length") == str(len(KEYAUTH))
    assert up.stats()["requests"] == 0  # never reached the upstream


@pytest.mark.parametrize("target", [
    f"/.well-known/acme-challenge/{TOKEN[:-1]}",  # unknown token
    "/.well-known/acme-challenge/",
    "/.well-known/acme-challenge/..%2f..%2fporch.toml",  # not base64url
    "/.well-known/acme-challenge/a.b.c.d.e.f.g.h.i.j.k.l.m.n",
    f"/.well-known/acme-challenge/{TOKEN}/x",
])
def test_anything_else_under_the_prefix_is_404(own, target):
    p, up = own
    publish(p, TOKEN, KEYAUTH)
    assert get(p.port, "a.example.com", target).status == 404
    assert up.stats()["requests"] == 0


def test_other_methods_get_405(own):
    p, _ = own
    publish(p, TOKEN, KEYAUTH)
    r = get(p.port, "a.example.com", f"/.well-known/acme-challenge/{TOKEN}", "POST")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD"


def test_dot_segments_are_resolved_before_the_check(own):
    p, _ = own
    publish(p, TOKEN, KEYAUTH)
    r = get(p.port, "a.example.com", f"/x/../.well-known/./acme-challenge/{TOKEN}")
    assert r.status == 200 and r.body == KEYAUTH.encode()


def test_sites_without_tls_leave_the_path_to_their_upstream(porch, upstream):
    up = upstream()
    p = porch(site(up))
    publish(p, TOKEN, KEYAUTH)
    r = get(p.port, "a.example.com", f"/.well-known/acme-challenge/{TOKEN}")
    assert r.status == 200 and r.json()["path"] == f"/.well-known/acme-challenge/{TOKEN}"


def test_upstream_mode_passes_other_tokens_to_the_upstream(porch, upstream):
    """Snikket gets its own certificates: its tokens reach it; Porch's are answered."""
    up = upstream()
    p = porch(site(up, 'tls = "auto"\nacme_challenge = "upstream"'), acme_ca="https://127.0.0.1:1/dir",
              https_port=free_port())
    publish(p, TOKEN, KEYAUTH)
    theirs = "S" * 43
    r = get(p.port, "a.example.com", f"/.well-known/acme-challenge/{theirs}")
    assert r.status == 200 and r.json()["path"] == f"/.well-known/acme-challenge/{theirs}"
    r = get(p.port, "a.example.com", f"/.well-known/acme-challenge/{TOKEN}")
    assert r.body == KEYAUTH.encode()
    assert up.stats()["requests"] == 1


def test_webroot_mode_serves_files_and_refuses_escapes(porch, upstream, tmp_path):
    up = upstream()
    root = tmp_path / "letsencrypt"
    challenges = root / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / TOKEN).write_text(KEYAUTH)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    os.symlink(secret, challenges / ("L" * 43))  # a symlink leading out of the root
    (root / "inside.txt").write_text("inside")
    os.symlink(root / "inside.txt", challenges / ("I" * 43))  # one staying inside: fine
    (challenges / ("D" * 43)).mkdir()  # a directory is not a file
    p = porch(site(up, f'acme_challenge = {{ webroot = "{root}" }}'))
    r = get(p.port, "a.example.com", f"/.well-known/acme-challenge/{TOKEN}")
    assert r.status == 200 and r.body == KEYAUTH.encode()
    assert get(p.port, "a.example.com", "/.well-known/acme-challenge/" + "L" * 43).status == 404
    assert get(p.port, "a.example.com", "/.well-known/acme-challenge/" + "D" * 43).status == 404
    assert get(p.port, "a.example.com", "/.well-known/acme-challenge/" + "I" * 43).body == b"inside"
    assert get(p.port, "a.example.com", "/.well-known/acme-challenge/" + "M" * 43).status == 404
    assert up.stats()["requests"] == 0
