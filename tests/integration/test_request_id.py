"""X-Request-ID (server/proxy.py): every request has one, sent upstream, returned to the
client (Porch's own answers too), written in the access log and offered to header rules
as {request_id}; a trusted proxy's sane id is kept, anyone else's replaced.  Raw
HTTP/1.1 sockets and curl over HTTP/2, the echo upstream showing what it got."""

from __future__ import annotations

import json
import re

from .helpers import RawConn, curl_fetch, free_port, resolve, wait_for_port

HOST = "app.test"
GENERATED = re.compile(r"[0-9a-f]{24,}")


def config(up_url: str, tls: str = "off") -> str:
    return f"""
[[site]]
hosts = ["{HOST}"]
tls = "{tls}"
redirect_http = false
request_headers = {{ set = {{ "X-Trace" = "id={{request_id}}" }} }}
  [[site.route]]
  path = "/app/"
  proxy = "{up_url}"
"""


def get(port: int, path: str, *fields: str):
    with RawConn(port) as c:
        c.send((f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n" + "".join(f + "\r\n" for f in fields)
                + "\r\n").encode())
        return c.read_response()


def upstream_got(r, name: str) -> list[str]:
    return [v for k, v in r.json()["headers"] if k.lower() == name.lower()]


def test_generated_sent_up_returned_logged_and_spoofs_replaced(porch, upstream):
    up = upstream()
    p = porch(config(up.url), access_log_format="json")
    ids = []
    for spoof in ((), ("X-Request-ID: chosen-by-client",), ("x_request_id: chosen",)):
        r = get(p.port, "/app/x?h=X-Request-ID:from-the-app", *spoof)
        assert r.status == 200
        rid = r.header("X-Request-ID")
        assert r.header_all("X-Request-ID") == [rid]  # the app's echo is not a second one
        assert GENERATED.fullmatch(rid), rid
        assert upstream_got(r, "X-Request-ID") == [rid]
        assert upstream_got(r, "X-Trace") == [f"id={rid}"]
        ids.append(rid)
    assert len(set(ids)) == 3
    r = get(p.port, "/nothing")  # Porch's own 404
    assert r.status == 404 and GENERATED.fullmatch(r.header("X-Request-ID"))
    ids.append(r.header("X-Request-ID"))
    logged = [json.loads(line)["request_id"] for line in p.access_log_lines(4)]
    assert logged == ids


def test_trusted_proxy_id_is_kept_unless_insane(porch, upstream):
    up = upstream()
    p = porch(config(up.url), trusted_proxies=["127.0.0.1/32"])
    r = get(p.port, "/app/x", "X-Request-ID: lb-7f3a.42_x")
    assert r.header("X-Request-ID") == "lb-7f3a.42_x"
    assert upstream_got(r, "X-Request-ID") == ["lb-7f3a.42_x"]
    for bad in ('X-Request-ID: a "quoted" id', "X-Request-ID: " + "a" * 201, "X-Request-ID: caf\xe9"):
        with RawConn(p.port) as c:
            c.send(f"GET /app/x HTTP/1.1\r\nHost: {HOST}\r\n{bad}\r\n\r\n".encode("latin-1"))
            r = c.read_response()
        assert r.status == 200
        assert GENERATED.fullmatch(r.header("X-Request-ID")), bad
        assert upstream_got(r, "X-Request-ID") == [r.header("X-Request-ID")]
    # combined format: the id after the duration
    lines = p.access_log_lines(4)
    assert lines[0].endswith(" lb-7f3a.42_x"), lines[0]


def test_request_id_over_http2(porch, upstream):
    up = upstream()
    https_port = free_port()
    p = porch(config(up.url, tls="internal"), https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")
    r = curl_fetch(f"https://{HOST}:{https_port}/app/x", "--http2", "-k", *resolve(HOST, https_port),
                   "-H", "X-Request-ID: spoofed")
    assert r.rc == 0, r.stderr
    rid = r.header("x-request-id")
    assert GENERATED.fullmatch(rid)
    assert [v for k, v in r.json()["headers"] if k.lower() == "x-request-id"] == [rid]
    r = curl_fetch(f"https://{HOST}:{https_port}/nothing", "--http2", "-k", *resolve(HOST, https_port))
    assert r.status == 404 and GENERATED.fullmatch(r.header("x-request-id"))
