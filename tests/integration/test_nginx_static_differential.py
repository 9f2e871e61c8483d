"""One nginx file with root, index, try_files and every location kind (prefix, =, ^~,
~, ~*), served by Debian's nginx and by `porch run -c FILE` (the nginx front-end maps
them to root, exact, priority, regex, regex_case): for each path, the same status,
Location, body for files, and the same target at the echo upstream for proxied ones."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin

import pytest

from .helpers import RawConn, Upstream
from .differential import Pair, req
from .test_nginx_differential import serve

HOST = "files.test"
CONF = r"""
server {
    listen 127.0.0.1:PORT;
    server_name files.test;
    root ROOT;
    index index.html;
    location / {
        try_files $uri $uri/ =404;
    }
    location = /exact.txt {
        proxy_pass http://UPSTREAM;
    }
    location ^~ /app/ {
        proxy_pass http://UPSTREAM;
    }
    location ~* \.(png|jpg)$ {
        root ROOT/img;
    }
    location ~ ^/api/ {
        proxy_pass http://UPSTREAM;
    }
    location /static/ {
        root ROOT;
    }
}
"""

FILES = {
    "index.html": b"home page\n",
    "a.txt": b"plain file a\n",
    "exact.txt": b"a file the exact location proxies instead\n",
    "app/x.png": b"under ^~: proxied, not the png location\n",
    "img/pic.PNG": b"PNG from the ~* location's own root\n",
    "api/x.txt": b"a file the regex location proxies instead\n",
    "static/s.css": b"body { color: red }\n",
    "static/logo.jpg": b"the ~* location wins over the /static/ prefix\n",
    "img/static/logo.jpg": b"jpg from the img root\n",
    "sub/index.html": b"sub index\n",
    "empty/keep.txt": b"a directory without index\n",
}

PATHS = ["/", "/a.txt", "/exact.txt", "/exact.txt/", "/app/x.png", "/pic.PNG", "/pic.png",
         "/api/x.txt", "/static/s.css", "/static/logo.jpg", "/sub/", "/sub", "/empty/", "/missing",
         "/a.txt?q=1", "/static/../a.txt"]


@pytest.fixture(scope="module")
def pair(module_procs, tmp_path_factory) -> Pair:
    root = tmp_path_factory.mktemp("www")
    for name, body in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    root.chmod(0o755)
    upstream = Upstream(module_procs, tmp_path_factory.mktemp("echo"))
    return serve(module_procs, tmp_path_factory.mktemp("static"), CONF.replace("ROOT", str(root)), upstream)


def answer(port: int, target: str) -> tuple[int, str, bytes | str]:
    """(status, Location as the client resolves it, the file's bytes or the target the
    upstream received)."""
    with RawConn(port) as conn:
        conn.send(req("GET", target, HOST))
        resp = conn.read_response()
    location = resp.header("location")
    location = urljoin(f"http://{HOST}:{port}{target}", location).replace(str(port), "PORT") if location else ""
    if resp.header("content-type") == "application/json" and resp.body.startswith(b"{"):
        return resp.status, location, resp.json()["target"]  # the echo upstream's view
    return resp.status, location, resp.body if resp.status == 200 else b""


@pytest.mark.parametrize("target", PATHS)
def test_same_answer_as_nginx(pair: Pair, target: str) -> None:
    nginx, porch = answer(pair.reference, target), answer(pair.porch, target)
    assert porch == nginx, f"{target}\n nginx: {nginx}\n porch: {porch}"


def test_the_table_covers_files_proxies_and_errors(pair: Pair) -> None:
    """The cases above mean something: some are files, some proxied, some 403/404/301."""
    seen = {answer(pair.porch, t)[0] for t in PATHS}
    assert {200, 301, 403, 404} <= seen
    assert answer(pair.porch, "/exact.txt")[2] == "/exact.txt"  # proxied, not the file
    assert answer(pair.porch, "/pic.PNG")[2] == FILES["img/pic.PNG"]
