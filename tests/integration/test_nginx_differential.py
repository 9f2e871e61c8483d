"""The same nginx file served by Debian's nginx and by `porch run -c FILE`, against the
same echo upstream: for each request of a table, what the upstream received (method,
target, Host, the forwarding and config-set fields) and what the client got (status,
Location, body for Porch's own answers) must be the same, but for the intended
differences listed in INTENDED, each with its reason.

Files: LibreTime's and Radicale's guide files (tests/data/nginx, verbatim, with the
listen port and the upstream address rendered for the test), and a table of proxy_pass
URI replacements (with and without a URI part, trailing slashes, encoded characters).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from . import differential
from .differential import Pair, req
from .helpers import PORCH_BIN, Registry, Upstream, free_port, wait_for_port

DATA = Path(__file__).resolve().parent.parent / "data" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# What the upstream sees that the two may spell differently, and why that is intended.
INTENDED = {
    "x-forwarded-for/client-sent": "nginx's $proxy_add_x_forwarded_for appends to what the client"
    " sent (forgeable); Porch drops a client's X-Forwarded-For unless it comes from trusted_proxies",
    "x-remote-user/client-sent": "nginx passes a client's X-Remote-User when the file does not set it;"
    " Porch never trusts identity fields from clients",
    "unknown-host": "nginx gives a Host no server names to its default server; Porch answers 404",
    "forwarding-fields": "Porch always sends X-Forwarded-For/-Proto/-Host/-Port and X-Real-IP (and"
    " X-Script-Name, X-Forwarded-Prefix where it strips a prefix); nginx sends only the lines written",
    "no-location": "a path no location takes: nginx serves its root (403 or 404 here); Porch answers 404",
    "decoded-reserved": "with a URI part nginx sends the path decoded and re-encoded, so %2F becomes"
    " a path separator and %2B a plus; Porch keeps the client's encoding of reserved characters",
    "slashless-prefix": "location /old + proxy_pass .../new: nginx joins the strings (/oldx -> /newx,"
    " /old -> /new); Porch's strip_prefix keeps a slash (/new/x, /new/): warned at check",
    "raw-target": "without a URI part nginx passes the target byte for byte; Porch passes the path it"
    " routed: dot segments resolved, %XX of unreserved characters decoded (RFC 3986 6.2.2), so the"
    " upstream never sees a path other than the one routing decided on",
}
PORCH_OWN = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip",
             "x-script-name", "x-forwarded-prefix")  # INTENDED["forwarding-fields"]
# Fields compared at the upstream: the ones the files set, and the forwarding ones.
COMPARED = ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
            "x-forwarded-port", "x-script-name", "authorization", "x-remote-user", "depth",
            "content-length", "content-type", "x-forwarded-prefix")


def nginx_main(d: Path, site: Path) -> str:
    temp = "".join(f"    {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, nginx's workers would run as nobody and not write request bodies to d.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n{temp}"
            f"    include {site};\n}}\n")


def serve(procs: Registry, tmp: Path, text: str, upstream: Upstream) -> Pair:
    """Render `text` twice (its own port for each server) and start nginx and Porch."""
    def nginx(d: Path, site: Path, port: int) -> list[str]:
        (d / "nginx.conf").write_text(nginx_main(d, site))
        return [NGINX, "-p", f"{d}/", "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")]

    def render(port: int) -> str:
        return text.replace("PORT", str(port)).replace("UPSTREAM", f"127.0.0.1:{upstream.port}")

    return differential.serve(procs, tmp, "nginx", render, nginx, upstream)


def render_guide(name: str, wrap: bool = False) -> str:
    text = (DATA / name).read_text()
    text = text.replace("listen 80;", "listen 127.0.0.1:PORT;").replace("localhost:8080", "UPSTREAM")
    text = text.replace("localhost:5232", "UPSTREAM")
    if wrap:  # Radicale's guide prints the location alone; nginx needs it in a server
        text = f"server {{\n    listen 127.0.0.1:PORT;\n    server_name dav.example.org;\n{text}}}\n"
    return text


def compare(pair: Pair, request: bytes, skip: tuple[str, ...] = ()) -> None:
    """differential.compare with this file's fields (status, Location, upstream view)."""
    differential.compare(pair, request, name="nginx", compared=COMPARED, porch_own=PORCH_OWN, skip=skip)


@pytest.fixture(scope="module")
def echo(module_procs, tmp_path_factory) -> Upstream:
    return Upstream(module_procs, tmp_path_factory.mktemp("echo"))


@pytest.fixture(scope="module")
def libretime(module_procs, tmp_path_factory, echo) -> Pair:
    return serve(module_procs, tmp_path_factory.mktemp("libretime"), render_guide("libretime.conf"), echo)


@pytest.fixture(scope="module")
def radicale(module_procs, tmp_path_factory, echo) -> Pair:
    return serve(module_procs, tmp_path_factory.mktemp("radicale"), render_guide("radicale.conf", wrap=True), echo)


LT = "libretime.example.org"
LIBRETIME = [
    req("GET", "/", LT),
    req("GET", "/api/v2/info?x=1&y=%20", LT),
    req("GET", "/static/a/../b.css", LT),
    req("HEAD", "/", LT),
    req("POST", "/rest/media", LT, "Content-Type: audio/ogg\r\n", b"x" * 70_000),
    req("PUT", "/rest/media/1", LT, "Content-Type: application/json\r\n", b'{"a": 1}'),
    req("DELETE", "/rest/media/1", LT),
    req("GET", "/status/404", LT),
    req("GET", "/status/503", LT),
    req("GET", "/redirect?to=/login", LT),
    req("GET", "/", LT, "X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n"),
]


@pytest.mark.parametrize("request_bytes", LIBRETIME, ids=lambda r: r.split(b"\r\n")[0].decode())
def test_libretime_guide_same_as_nginx(libretime: Pair, request_bytes: bytes) -> None:
    compare(libretime, request_bytes)


def test_libretime_client_sent_forwarded_for_is_the_intended_difference(libretime: Pair) -> None:
    request = req("GET", "/", LT, "X-Forwarded-For: 6.6.6.6\r\n")
    compare(libretime, request, skip=("x-forwarded-for",))
    _, _, nginx = libretime.ask(libretime.reference, request)
    _, _, porch = libretime.ask(libretime.porch, request)
    assert ["X-Forwarded-For", "6.6.6.6, 127.0.0.1"] in nginx["headers"]  # INTENDED["x-forwarded-for/client-sent"]
    assert ["X-Forwarded-For", "127.0.0.1"] in porch["headers"]


def test_libretime_unknown_host_is_the_intended_difference(libretime: Pair) -> None:
    status, _, seen = libretime.ask(libretime.reference, req("GET", "/", "other.example"))
    assert status == 200 and seen is not None  # INTENDED["unknown-host"]
    status, _, seen = libretime.ask(libretime.porch, req("GET", "/", "other.example"))
    assert status == 404 and seen is None


DAV = "dav.example.org"
RADICALE = [
    req("GET", "/radicale/", DAV),
    req("GET", "/radicale/alice/calendar.ics/", DAV, "Authorization: Basic YWxpY2U6c2VjcmV0\r\n"),
    req("PROPFIND", "/radicale/alice/", DAV, "Depth: 1\r\nContent-Type: text/xml\r\n", b"<propfind/>" * 10),
    req("PUT", "/radicale/alice/cal/e.ics", DAV, "Content-Type: text/calendar\r\n", b"B" * 1024 * 1024),
    req("PUT", "/radicale/alice/cal/big.ics", DAV, "Content-Type: text/calendar\r\n", b"B" * (1024 * 1024 + 1)),
    req("GET", "/radicale", DAV),
    req("GET", "/radicale/status/401", DAV),
    req("GET", "/radicale/redirect?to=/radicale/alice/", DAV),
]


@pytest.mark.parametrize("request_bytes", RADICALE, ids=lambda r: r.split(b"\r\n")[0].decode())
def test_radicale_guide_same_as_nginx(radicale: Pair, request_bytes: bytes) -> None:
    compare(radicale, request_bytes)


def test_radicale_forged_remote_user_is_the_intended_difference(radicale: Pair) -> None:
    request = req("GET", "/radicale/", DAV, "X-Remote-User: bob\r\n")
    compare(radicale, request, skip=("x-remote-user",))
    _, _, nginx = radicale.ask(radicale.reference, request)
    _, _, porch = radicale.ask(radicale.porch, request)
    assert ["X-Remote-User", "bob"] in nginx["headers"]  # INTENDED["x-remote-user/client-sent"]
    assert not [h for h in porch["headers"] if h[0].lower() == "x-remote-user"]


URI_FILE = """server {
    listen 127.0.0.1:PORT;
    server_name uri.test;
    location / { proxy_pass http://UPSTREAM; }
    location /asis/ { proxy_pass http://UPSTREAM; }
    location /radicale/ { proxy_pass http://UPSTREAM/; }
    location /api/ { proxy_pass http://UPSTREAM/v2/; }
    location /old { proxy_pass http://UPSTREAM/new; }
}
"""
URIS = ["/asis/a%20b", "/asis/a/b?c=%2F", "/radicale/", "/radicale/a/b?c=d",
        "/radicale/a%20b", "/radicale/x/../y", "/radicale/%7Euser", "/api/", "/api/items?page=2",
        "/api/a%20b/c", "/old/x", "/radicale/caf%C3%A9", "/plain?q=%2F",
        "/radicale//x", "/api/%7e"]


@pytest.fixture(scope="module")
def uri(module_procs, tmp_path_factory, echo) -> Pair:
    return serve(module_procs, tmp_path_factory.mktemp("uri"), URI_FILE, echo)


@pytest.mark.parametrize("target", URIS)
def test_proxy_pass_uri_replacement_same_as_nginx(uri: Pair, target: str) -> None:
    compare(uri, req("GET", target, "uri.test"))


def test_radicale_path_no_location_takes_is_the_intended_difference(radicale: Pair) -> None:
    status, _, seen = radicale.ask(radicale.reference, req("GET", "/", DAV))
    assert status in (403, 404) and seen is None  # INTENDED["no-location"]: nginx's own root
    status, _, seen = radicale.ask(radicale.porch, req("GET", "/", DAV))
    assert status == 404 and seen is None


@pytest.mark.parametrize(("target", "routed"), [("/asis/x/../y", "/asis/y"), ("/asis/%7Euser", "/asis/~user")])
def test_target_without_uri_part_is_the_routed_path(uri: Pair, target: str, routed: str) -> None:
    _, _, nginx = uri.ask(uri.reference, req("GET", target, "uri.test"))
    _, _, porch = uri.ask(uri.porch, req("GET", target, "uri.test"))
    assert nginx["target"] == target and porch["target"] == routed  # INTENDED["raw-target"]


@pytest.mark.parametrize(("target", "decoded", "kept"), [("/radicale/a%2Fb", "/a/b", "/a%2Fb"),
                                                          ("/radicale/a+b%2B", "/a+b+", "/a+b%2B")])
def test_reserved_characters_keep_their_encoding(uri: Pair, target: str, decoded: str, kept: str) -> None:
    _, _, nginx = uri.ask(uri.reference, req("GET", target, "uri.test"))
    _, _, porch = uri.ask(uri.porch, req("GET", target, "uri.test"))
    assert nginx["target"] == decoded and porch["target"] == kept  # INTENDED["decoded-reserved"]


def test_reload_rereads_the_nginx_file(procs: Registry, tmp_path: Path, echo: Upstream) -> None:
    """SIGHUP/`porch reload -c FILE` read the nginx file again, as `porch run` did."""
    pair_text = render_guide("radicale.conf", wrap=True)
    d = tmp_path / "porch"
    d.mkdir()
    port = free_port()
    site = d / "site.conf"
    site.write_text(pair_text.replace("PORT", str(port)).replace("UPSTREAM", f"127.0.0.1:{echo.port}"))
    env = ["env", f"PORCH_STATE_DIR={d / 'state'}"]
    managed = procs.start([*env, str(PORCH_BIN), "run", "-c", str(site)], cwd=d, name="porch")
    wait_for_port(port, managed)
    pair = Pair(0, port, echo)
    _, _, seen = pair.ask(port, req("GET", "/radicale/x", DAV))
    assert ["X-Script-Name", "/radicale"] in seen["headers"]
    site.write_text(site.read_text().replace("X-Script-Name /radicale", "X-Script-Name /dav"))
    done = subprocess.run([*env, str(PORCH_BIN), "reload", "-c", str(site)], capture_output=True, text=True,
                          timeout=60, cwd=d)
    assert done.returncode == 0, done.stderr
    _, _, seen = pair.ask(port, req("GET", "/radicale/x", DAV))
    assert ["X-Script-Name", "/dav"] in seen["headers"]


@pytest.mark.parametrize(("target", "joined", "porch_target"), [("/oldx", "/newx", "/new/x"), ("/old", "/new", "/new/"),
                                                                ("/old?x=1", "/new?x=1", "/new/?x=1")])
def test_slashless_prefix_is_the_intended_difference(uri: Pair, target: str, joined: str, porch_target: str) -> None:
    _, _, nginx = uri.ask(uri.reference, req("GET", target, "uri.test"))
    _, _, porch = uri.ask(uri.porch, req("GET", target, "uri.test"))
    assert nginx["target"] == joined and porch["target"] == porch_target  # INTENDED["slashless-prefix"]
