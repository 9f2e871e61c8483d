"""`porch run -c FILE` on an nginx file whose server blocks write their own logs
(issue 15): each server's requests land in its own access_log, in nginx's combined
format (a log_format equal to combined included), `access_log off` writes nothing, and
a server with none writes the http level's file, a location with its own writes there."""

from __future__ import annotations

import re
import time
from pathlib import Path

from .helpers import PORCH_BIN, RawConn, free_port, wait_for_port

NGINX = """http {{
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent"';
    access_log {d}/http.access.log;
    error_log {d}/http.error.log;
    server {{
        listen 127.0.0.1:{port};
        server_name a.test;
        access_log {d}/a.access.log;
        error_log {d}/a.error.log;
        location / {{ proxy_pass {up}; }}
        location /api/ {{ access_log {d}/a.api.log; proxy_pass {up}; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name b.test;
        access_log {d}/b.access.log main;
        location / {{ proxy_pass {up}; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name quiet.test;
        access_log off;
        location / {{ proxy_pass {up}; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name plain.test;
        location / {{ proxy_pass {up}; }}
    }}
}}
"""
# nginx's combined, with Porch's request time and id after it (docs/operations.md)
COMBINED = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET (/\S+) HTTP/1\.1" 200 \d+ "-" "-"')


def get(port: int, host: str, path: str) -> int:
    with RawConn(port) as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return conn.read_response().status


def lines(path: Path, count: int, timeout: float = 5.0) -> list[str]:
    """The file's lines once it has `count` (Porch flushes its batches within ~1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = path.read_text().splitlines() if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_two_server_blocks_log_to_two_files(procs, upstream, tmp_path):
    up = upstream()
    port = free_port()
    d = tmp_path / "logs"
    d.mkdir()
    site = tmp_path / "site.conf"
    site.write_text(NGINX.format(d=d, port=port, up=up.url))
    managed = procs.start(["env", f"PORCH_STATE_DIR={tmp_path / 'state'}", str(PORCH_BIN), "run", "-c", str(site)],
                          cwd=tmp_path, name="porch")
    wait_for_port(port, managed)
    for host, path in (("a.test", "/a/1"), ("b.test", "/b/1"), ("a.test", "/api/1"), ("a.test", "/a/2"),
                       ("quiet.test", "/q/1"), ("plain.test", "/p/1"), ("b.test", "/b/2")):
        assert get(port, host, path) == 200
    a, b = lines(d / "a.access.log", 2), lines(d / "b.access.log", 2)
    shared = lines(d / "http.access.log", 1)
    assert [COMBINED.match(x).group(1) for x in a] == ["/a/1", "/a/2"]
    assert [COMBINED.match(x).group(1) for x in b] == ["/b/1", "/b/2"]
    assert [COMBINED.match(x).group(1) for x in lines(d / "a.api.log", 1)] == ["/api/1"]  # the location's own
    assert [COMBINED.match(x).group(1) for x in shared] == ["/p/1"]  # quiet.test: nowhere
    assert not any("/q/1" in x for f in d.glob("*.access.log") for x in f.read_text().splitlines())
    assert (d / "a.error.log").exists()
