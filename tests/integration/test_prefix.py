"""strip_prefix: an app mounted under /radicale/ that believes it lives at /."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest

from .helpers import Porch, RawConn, Upstream, assert_short_error_body


@pytest.fixture(scope="module")
def mounted(module_procs, tmp_path_factory):
    """One echo upstream behind Porch at dav.test/radicale/ (strip_prefix), for the module."""
    up = Upstream(module_procs, tmp_path_factory.mktemp("up"))
    p = Porch(module_procs, tmp_path_factory.mktemp("porch"), f"""
[[site]]
hosts = ["dav.test"]
  [[site.route]]
  path = "/radicale/"
  proxy = "{up.url}"
  strip_prefix = true
""")
    return p, up


def fetch(port: int, target: str):
    with RawConn(port) as c:
        c.send(f"GET {target} HTTP/1.1\r\nHost: dav.test:{port}\r\n\r\n".encode())
        return c.read_response()


def values(doc: dict, name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def test_prefix_stripped_with_script_name(mounted):
    p, up = mounted
    r = fetch(p.port, "/radicale/foo?x=1")
    assert r.status == 200
    doc = r.json()
    assert doc["target"] == "/foo?x=1"
    assert values(doc, "X-Script-Name") == ["/radicale"]
    assert values(doc, "X-Forwarded-Prefix") == ["/radicale"]


def test_prefix_root_becomes_slash(mounted):
    p, up = mounted
    r = fetch(p.port, "/radicale/")
    assert r.status == 200
    assert r.json()["target"] == "/"


@pytest.mark.parametrize("target, want", [("/radicale", "/radicale/"),
                                          ("/radicale?x=1", "/radicale/?x=1")])
def test_prefix_without_slash_redirected(mounted, target, want):
    p, up = mounted
    before = up.stats()["requests"]
    r = fetch(p.port, target)
    assert r.status == 301
    loc = urlsplit(r.header("Location") or "")
    assert loc.path + ("?" + loc.query if loc.query else "") == want
    assert loc.netloc in ("", f"dav.test:{p.port}")
    assert_short_error_body(r.body)
    assert up.stats()["requests"] == before


@pytest.mark.parametrize("kind", ["upstream-absolute", "absolute-path", "already-prefixed",
                                  "foreign"])
def test_location_rewritten_under_prefix(mounted, kind):
    p, up = mounted
    location, want = {
        "upstream-absolute": (f"http://127.0.0.1:{up.port}/bar?q=1",
                              f"http://dav.test:{p.port}/radicale/bar?q=1"),
        "absolute-path": ("/bar", "/radicale/bar"),
        "already-prefixed": ("/radicale/bar", "/radicale/bar"),
        "foreign": ("https://elsewhere.example/bar", "https://elsewhere.example/bar"),
    }[kind]
    r = fetch(p.port, f"/radicale/redirect?to={quote(location, safe='')}")
    assert r.status == 302
    assert r.header("Location") == want
