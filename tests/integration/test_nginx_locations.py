"""Side by side with Debian's nginx: the same locations (prefix, ^~, ~, ~*, =) and the
same request paths select the same location in both, and the same files get the same
validators, 304s and ranges (nginx's behaviour is the reference)."""

from __future__ import annotations

import os
import shutil

import pytest

from .helpers import RawConn, free_port, wait_for_port

HOST = "app.test"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# name, nginx location, porch route keys
LOCATIONS = [
    ("root", "location /", 'path = "/"'),
    ("exact", "location = /exact", 'exact = "/exact"'),
    ("static", "location /static/", 'path = "/static/"'),
    ("assets", "location ^~ /assets/", 'path = "/assets/"\npriority = "prefix"'),
    ("php", "location ~ \\.php$", "regex = '\\.php$'"),
    ("img", "location ~* \\.(jpg|png)$", "regex = '\\.(jpg|png)$'\nregex_case = false"),
    ("css", "location ~ ^/static/.*\\.css$", "regex = '^/static/.*\\.css$'"),
    ("api", "location /api/v1/", 'path = "/api/v1/"'),
    ("apiv", "location ~ ^/api/", "regex = '^/api/'"),
]
PATHS = ["/", "/exact", "/exact/", "/exactly", "/exact.php", "/static/x", "/static/x.php", "/static/a.PNG",
         "/static/a.css", "/assets/a.php", "/assets/a.png", "/assets/x", "/a.PHP", "/a.php", "/a.Jpg",
         "/api/v1/x", "/api/v2/x", "/api/v1/x.php", "/other/deep/path.css", "/static/sub/b.css"]


def nginx_conf(d, port: int, body: str) -> str:
    temp = "".join(f"    {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}    default_type application/octet-stream;
    types {{ text/html html; text/css css; }}
    server {{
        listen 127.0.0.1:{port};
        server_name {HOST};
{body}
    }}
}}
"""


@pytest.fixture
def nginx(procs, tmp_path):
    def start(body: str) -> int:
        d = tmp_path / "nginx"
        d.mkdir()
        port = free_port()
        (d / "nginx.conf").write_text(nginx_conf(d, port, body))
        m = procs.start([NGINX, "-p", f"{d}/", "-c", str(d / "nginx.conf"), "-e", f"{d}/error.log"],
                        cwd=d, name="nginx")
        wait_for_port(port, m, what="nginx")
        return port
    return start


def ask(port: int, target: str, extra: str = "", method: str = "GET"):
    with RawConn(port) as c:
        c.send(f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode())
        return c.read_response(head_request=method == "HEAD")


def test_the_same_paths_select_the_same_locations(nginx, porch, upstream):
    up = upstream()
    body = "\n".join(f'        {loc} {{ add_header X-Loc {name} always; return 200 "{name}\\n"; }}'
                     for name, loc, _ in LOCATIONS)
    nginx_port = nginx(body)
    routes = "".join(f'[[site.route]]\n{keys}\nproxy = "{up.url}"\n'
                     f'response_headers = {{ set = {{ "X-Loc" = "{name}" }} }}\n'
                     for name, _, keys in LOCATIONS)
    p = porch(f'[[site]]\nhosts = ["{HOST}"]\n{routes}')
    for path in PATHS:
        want = ask(nginx_port, path).header("X-Loc")
        got = ask(p.port, path).header("X-Loc")
        assert (path, got) == (path, want)


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "www"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "index.html").write_text("<p>dir</p>\n")
    (root / "empty").mkdir()
    (root / "page.html").write_text("<p>page</p>\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 400)
    os.utime(root / "data.bin", (1_600_000_000, 1_600_000_000))
    return root


# (method, path, extra request fields): nginx's and Porch's answers are compared
STATIC_CASES = [
    ("GET", "/data.bin", ""),
    ("HEAD", "/data.bin", ""),
    ("GET", "/data.bin", 'If-None-Match: "5f5e1000-19000"\r\n'),
    ("GET", "/data.bin", 'If-None-Match: "nope"\r\n'),
    ("GET", "/data.bin", "If-Modified-Since: Sun, 13 Sep 2020 12:26:40 GMT\r\n"),
    ("GET", "/data.bin", "If-Modified-Since: Sat, 12 Sep 2020 12:26:40 GMT\r\n"),
    ("GET", "/data.bin", "Range: bytes=0-99\r\n"),
    ("GET", "/data.bin", "Range: bytes=102300-\r\n"),
    ("GET", "/data.bin", "Range: bytes=-10\r\n"),
    ("GET", "/data.bin", "Range: bytes=500000-\r\n"),
    ("GET", "/data.bin", 'Range: bytes=0-9\r\nIf-Range: "5f5e1000-19000"\r\n'),
    ("GET", "/data.bin", 'Range: bytes=0-9\r\nIf-Range: "old"\r\n'),
    ("GET", "/page.html", ""),
    ("GET", "/dir/", ""),
    ("GET", "/dir", ""),
    ("GET", "/empty/", ""),
    ("GET", "/missing", ""),
    ("GET", "/%2e%2e/etc/passwd", ""),
]
COMPARED = ("ETag", "Last-Modified", "Content-Range", "Content-Length", "Accept-Ranges")


def test_static_answers_match_nginx(nginx, porch, files):
    nginx_port = nginx(f"        root {files};\n        location / {{ }}")
    p = porch(f'[[site]]\nhosts = ["{HOST}"]\nroot = "{files}"\n')
    for method, path, extra in STATIC_CASES:
        want = ask(nginx_port, path, extra, method)
        got = ask(p.port, path, extra, method)
        case = (method, path, extra)
        assert got.status == want.status, case
        if want.status in (200, 206, 304):
            for name in COMPARED:
                assert got.header(name) == want.header(name), (case, name)
            assert got.body == want.body, case
        if want.status == 301:
            assert got.header("Location").endswith(want.header("Location").split(HOST + ":")[-1].split("/", 1)[-1])
