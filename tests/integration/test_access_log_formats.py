"""Access-log formats (issue 17, "Logs"): "json" lines that stay one object with the same
keys whatever a client sends, over HTTP/1.1 and HTTP/2; "vhost_combined" (Apache's, with
"site:port " in front), which a file shared by several sites gets by default.

Real Porch processes on 127.0.0.1 (tests/integration/conftest.py), raw sockets and the h2
client in tests/integration/h2client.py; lines read once Porch has flushed them.
"""

from __future__ import annotations

import json
import re

import pytest

from .h2client import H2Client, StreamResult
from .helpers import RawConn, free_port, wait_for_port

# Every key of a JSON line (observability/accesslog.py json_line), none more.
JSON_KEYS = {
    "time", "site", "host", "route", "client_ip", "method", "target", "protocol", "status",
    "bytes_in", "bytes_out", "duration", "upstream", "upstream_status", "upstream_connect_time",
    "upstream_header_time", "upstream_time", "user", "user_agent", "referer", "request_id", "error",
}
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$")

# What a hostile client puts in the fields it controls: a quote and a brace to close the
# string and the object and open keys of its own, backslashes, a tab, bytes that are not
# UTF-8 and UTF-8 proper.  (CR, LF, NUL and DEL in a field, and bytes past ASCII in an
# HTTP/1.1 target, are refused with a 400 before any log line: llhttp, h2.)
AGENT = b'x", "status": 999, "injected": "1"} {"a\\": "\\\\u0000\xff caf\xc3\xa9\tend'
REFERER = b'"}{"forged": true}\xfe'
TARGET = b'/q?"},"status":1,{"\\u000a='


def _decoded(raw: bytes) -> str:
    """What the JSON line must give back: UTF-8 as text, other bytes as the text \\xHH."""
    return raw.decode("utf-8", "backslashreplace")


def json_records(p, count: int) -> list[dict]:
    lines = p.access_log_lines(count, timeout=5)
    assert len(lines) == count, lines
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"a line that is not one JSON object: {line!r}")
        assert isinstance(record, dict) and set(record) == JSON_KEYS, line
        assert line.isascii(), line  # escaped: no raw byte of the client's reaches the file
        out.append(record)
    return out


def check_hostile(record: dict, protocol: str) -> None:
    assert record["status"] == 200, record
    assert record["protocol"] == protocol
    assert record["site"] == "app.test" and record["route"] == "/"
    assert record["user_agent"] == _decoded(AGENT), record
    assert record["referer"] == _decoded(REFERER), record
    assert record["target"] == _decoded(TARGET), record
    assert record["client_ip"] == "127.0.0.1"
    assert RFC3339_MS.match(record["time"]), record["time"]
    assert re.fullmatch(r"[0-9a-f]{24,}", record["request_id"]), record


def test_json_line_is_one_object_whatever_an_http1_client_sends(upstream, porch):
    up = upstream()
    p = porch(f'[[site]]\nhosts = ["app.test"]\nproxy = "{up.url}"\n', access_log_format="json")
    with RawConn(p.port) as c:
        c.send(b"GET " + TARGET + b" HTTP/1.1\r\nHost: app.test\r\nUser-Agent: " + AGENT
               + b"\r\nReferer: " + REFERER + b"\r\n\r\n")
        assert c.read_response().status == 200
    (record,) = json_records(p, 1)
    check_hostile(record, "HTTP/1.1")
    assert record["upstream"] == up.url and record["upstream_status"] == 200
    assert 0 <= record["upstream_connect_time"] <= record["upstream_header_time"] <= record["duration"]
    assert 0 <= record["upstream_time"] <= record["duration"], record
    assert record["bytes_out"] > 0 and record["user"] is None and record["error"] is None


def test_json_line_is_one_object_whatever_an_http2_client_sends(upstream, porch):
    up = upstream()
    https_port = free_port()
    p = porch(f'[[site]]\nhosts = ["app.test"]\ntls = "internal"\nredirect_http = false\n'
              f'proxy = "{up.url}"\n', access_log_format="json", https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")
    with H2Client(https_port) as c:
        assert c.alpn == "h2"
        c.conn.config.validate_outbound_headers = False  # the client's own checks: off
        sid = c.conn.get_next_available_stream_id()
        c.streams[sid] = StreamResult()
        c.conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                  (b":authority", b"app.test"), (b":path", TARGET),
                                  (b"user-agent", AGENT), (b"referer", REFERER)], end_stream=True)
        c.flush()
        assert c.response(sid).status == 200
    (record,) = json_records(p, 1)
    check_hostile(record, "HTTP/2.0")


# -- vhost_combined ------------------------------------------------------------------

VHOST = re.compile(r'^(?P<vhost>\S+):(?P<port>\d+) 127\.0\.0\.1 - - \[[^]]+\] "(?P<request>[^"]*)" 200 ')
COMBINED = re.compile(r'^127\.0\.0\.1 - - \[[^]]+\] "(?P<request>[^"]*)" 200 ')


def test_a_file_shared_by_sites_gets_vhost_combined_lines(upstream, porch, tmp_path):
    """[porch]'s file written by two sites: Apache's vhost_combined, as Debian's
    other_vhosts_access.log; a site with a file of its own keeps combined, and so does
    a site that asks for "combined" itself."""
    up = upstream()
    own = tmp_path / "own.log"
    config = (f'[[site]]\nhosts = ["one.test"]\nproxy = "{up.url}"\n'
              f'[[site]]\nhosts = ["two.test"]\nproxy = "{up.url}"\n'
              f'[[site]]\nhosts = ["own.test"]\nproxy = "{up.url}"\naccess_log = "{own}"\n')
    p = porch(config)
    for host in ("one.test", "two.test", "own.test"):
        with RawConn(p.port) as c:
            c.send(f"GET /{host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert c.read_response().status == 200
    lines = p.access_log_lines(2, timeout=5)
    assert len(lines) == 2, lines
    for line, host in zip(sorted(lines, key=lambda ln: ln.split()[0]), ("one.test", "two.test")):
        m = VHOST.match(line)
        assert m, f"not a vhost_combined line: {line!r}"
        assert (m["vhost"], m["port"], m["request"]) == (host, str(p.port), f"GET /{host} HTTP/1.1")
    p.stop()
    own_lines = own.read_text().splitlines()
    assert len(own_lines) == 1 and COMBINED.match(own_lines[0]), own_lines


def test_vhost_combined_named_and_combined_kept_when_asked(upstream, porch, tmp_path):
    up = upstream()
    shared = tmp_path / "shared.log"
    config = (f'[[site]]\nhosts = ["one.test"]\nproxy = "{up.url}"\naccess_log = "{shared}"\n'
              f'access_log_format = "combined"\n'
              f'[[site]]\nhosts = ["two.test"]\nproxy = "{up.url}"\naccess_log = "{shared}"\n'
              f'access_log_format = "combined"\n'
              f'[[site]]\nhosts = ["three.test"]\nproxy = "{up.url}"\n')
    p = porch(config, access_log_format="vhost_combined")
    for host in ("one.test", "two.test", "three.test"):
        with RawConn(p.port) as c:
            c.send(f"GET /{host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert c.read_response().status == 200
    p.stop()
    shared_lines = shared.read_text().splitlines()
    assert len(shared_lines) == 2 and all(COMBINED.match(ln) for ln in shared_lines), shared_lines
    (line,) = p.access_log_path.read_text().splitlines()
    m = VHOST.match(line)
    assert m and m["vhost"] == "three.test", line


def test_a_route_writes_its_own_log_or_none(upstream, porch, tmp_path):
    """access_log per route (issue 17): a route's own file and format, a route with
    none, the site's other routes in [porch]'s file."""
    up = upstream()
    api = tmp_path / "api.log"
    config = (f'[[site]]\nhosts = ["app.test"]\n'
              f'  [[site.route]]\n  path = "/api/"\n  proxy = "{up.url}"\n'
              f'  access_log = "{api}"\n  access_log_format = "json"\n'
              f'  [[site.route]]\n  path = "/health/"\n  proxy = "{up.url}"\n  access_log = "off"\n'
              f'  [[site.route]]\n  path = "/"\n  proxy = "{up.url}"\n')
    p = porch(config)
    for path in ("/api/v1", "/health/z", "/page"):
        with RawConn(p.port) as c:
            c.send(f"GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
            assert c.read_response().status == 200
    p.stop()
    (line,) = api.read_text().splitlines()
    assert json.loads(line)["target"] == "/api/v1" and json.loads(line)["route"] == "/api/"
    (line,) = p.access_log_path.read_text().splitlines()
    assert COMBINED.match(line) and '"GET /page HTTP/1.1"' in line, line
