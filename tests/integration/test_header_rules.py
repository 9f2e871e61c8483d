"""request_headers and response_headers (policies/headers.py) with real peers: what the
upstream gets and what the client gets, over HTTP/1.1 and HTTP/2, on the upstream's
responses and Porch's own, merged from the site to the route."""

from __future__ import annotations

from .helpers import RawConn, curl_fetch, free_port, resolve, wait_for_port

HOST = "app.test"


def rules_config(up_url: str, tls: str) -> str:
    return f"""
[[site]]
hosts = ["{HOST}"]
tls = "{tls}"
redirect_http = false
request_headers = {{ set = {{ "X-Script-Name" = "/app", "X-Who" = "{{client_ip}} {{scheme}}://{{host}} [{{remote_user}}]" }}, remove = ["X-Debug"] }}
response_headers = {{ set = {{ "X-Frame-Options" = "SAMEORIGIN" }}, remove = ["X-Powered-By"] }}
  [[site.route]]
  path = "/api/"
  proxy = "{up_url}"
  response_headers = {{ add = {{ "Cache-Control" = "no-store" }} }}
  [[site.route]]
  path = "/web/"
  proxy = "{up_url}"
"""


def values(doc: dict, name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


# The upstream's own response fields, asked of the echo upstream (?h=Name:value).
ASK = "?h=X-Frame-Options:DENY&h=X-Powered-By:PHP/8&h=X-Kept:1"


def check_upstream_response(status, header, header_all, doc, route_rules: bool, scheme="http") -> None:
    assert status == 200
    assert header_all("X-Frame-Options") == ["SAMEORIGIN"]  # the app's DENY replaced
    assert header("X-Powered-By") is None
    assert header("X-Kept") == "1"
    assert (header("Cache-Control") == "no-store") is route_rules  # the route's, with the site's
    assert values(doc, "X-Script-Name") == ["/app"]
    assert values(doc, "X-Who") == [f"127.0.0.1 {scheme}://{HOST} []"]  # filled in per request
    assert values(doc, "X-Debug") == []
    assert values(doc, "X-Forwarded-For") == ["127.0.0.1"]  # Porch's own fields untouched


def test_rules_over_http1(porch, upstream):
    up = upstream()
    p = porch(rules_config(up.url, "off"))
    for path, route_rules in (("/api/x", True), ("/web/x", False)):
        with RawConn(p.port) as c:
            c.send(f"GET {path}{ASK} HTTP/1.1\r\nHost: {HOST}\r\nX-Debug: 1\r\n\r\n".encode())
            r = c.read_response()
        check_upstream_response(r.status, r.header, r.header_all, r.json(), route_rules)
    with RawConn(p.port) as c:  # Porch's own answer: no route for /
        c.send(f"GET /nothing HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        r = c.read_response()
    assert r.status == 404 and r.header_all("X-Frame-Options") == ["SAMEORIGIN"]


def test_rules_over_http2(porch, upstream):
    up = upstream()
    https_port = free_port()
    p = porch(rules_config(up.url, "internal"), https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")

    def get(path: str, *args: str):
        return curl_fetch(f"https://{HOST}:{https_port}{path}", "--http2", "-k",
                          *resolve(HOST, https_port), *args)

    for path, route_rules in (("/api/x", True), ("/web/x", False)):
        r = get(path + ASK, "-H", "X-Debug: 1")
        assert r.rc == 0, r.stderr
        all_of = lambda name: [v for k, v in r.headers if k.lower() == name.lower()]  # noqa: E731
        check_upstream_response(r.status, r.header, all_of, r.json(), route_rules, scheme="https")
        assert r.headers and r.headers[0][0] == r.headers[0][0].lower()  # HTTP/2 names
    r = get("/nothing")
    assert r.status == 404 and r.header("x-frame-options") == "SAMEORIGIN"


SECURITY = f"""
[[site]]
hosts = ["{HOST}"]
tls = "off"
security_headers = true
  [[site.route]]
  path = "/app/"
  proxy = "UP"
  [[site.route]]
  path = "/forced/"
  proxy = "UP"
  security_headers = {{ csp = "default-src 'self'", override = true }}
"""


def test_security_headers_fill_in_what_the_app_left_out(porch, upstream):
    up = upstream()
    p = porch(SECURITY.replace("UP", up.url))

    def get(path: str):
        with RawConn(p.port) as c:
            c.send(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            return c.read_response()

    r = get("/app/x?h=X-Frame-Options:ALLOW-FROM%20https://a.test")  # the app's own wins
    assert r.status == 200
    assert r.header_all("X-Frame-Options") == ["ALLOW-FROM https://a.test"]
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert r.header("Referrer-Policy") == "strict-origin-when-cross-origin"
    assert r.header("Content-Security-Policy") is None  # only when csp is given
    r = get("/forced/x?h=X-Frame-Options:ALLOWALL")
    assert r.header_all("X-Frame-Options") == ["SAMEORIGIN"]
    assert r.header("Content-Security-Policy") == "default-src 'self'"
    r = get("/elsewhere")  # Porch's own 404
    assert r.status == 404 and r.header("X-Content-Type-Options") == "nosniff"


def test_security_headers_over_http2(porch, upstream):
    up = upstream()
    https_port = free_port()
    p = porch(SECURITY.replace("UP", up.url).replace('tls = "off"', 'tls = "internal"\nredirect_http = false'),
              https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")

    def get(path: str):
        r = curl_fetch(f"https://{HOST}:{https_port}{path}", "--http2", "-k", *resolve(HOST, https_port))
        assert r.rc == 0, r.stderr
        return r

    r = get("/app/x?h=X-Frame-Options:DENY")  # the app's own wins
    assert r.status == 200 and r.header("x-frame-options") == "DENY"
    assert r.header("x-content-type-options") == "nosniff"
    r = get("/forced/x?h=X-Frame-Options:ALLOWALL")
    assert r.header("x-frame-options") == "SAMEORIGIN"
    assert r.header("content-security-policy") == "default-src 'self'"
    r = get("/elsewhere")
    assert r.status == 404 and r.header("referrer-policy") == "strict-origin-when-cross-origin"


# -- side by side with nginx's add_header ------------------------------------------------

NGINX_ADD_HEADER = """
worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            add_header X-Frame-Options SAMEORIGIN always;
            add_header Cache-Control public always;
            proxy_pass {upstream};
        }}
    }}
}}
"""
SAME_RULES = ('response_headers = { set = { "X-Frame-Options" = "SAMEORIGIN" },'
              ' add = { "Cache-Control" = "public" } }\n')


def test_the_same_fields_as_nginx_add_header_always(porch, upstream, procs, tmp_path):
    """LibreTime's and OpenTalk's `add_header ... always` against `set` and `add`, on
    the same upstream answers: 200, the app's own Cache-Control (kept, ours added
    after it, as nginx), 204, 304, 404 and 500 (nginx's `always`: Porch has no other
    mode).  The intended difference, not compared here: `set` replaces an app's field
    of the same name where add_header would send both (test_rules_over_http1)."""
    from .helpers import site
    up = upstream()
    d = tmp_path / "nginx"
    d.mkdir()
    nginx_port = free_port()
    (d / "nginx.conf").write_text(NGINX_ADD_HEADER.format(dir=d, port=nginx_port, upstream=up.url))
    managed = procs.start(["nginx", "-p", str(d), "-c", str(d / "nginx.conf"),
                           "-g", "daemon off; master_process off;"], cwd=d, name="nginx")
    wait_for_port(nginx_port, managed, what="nginx")
    p = porch(site(up.url, SAME_RULES, host=HOST))

    def view(port: int, path: str) -> tuple:
        with RawConn(port) as c:
            c.send(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            r = c.read_response()
        return r.status, r.header_all("X-Frame-Options"), r.header_all("Cache-Control")

    paths = ("/x", "/x?h=Cache-Control:no-cache", "/status/204", "/status/304", "/status/404", "/status/500")
    theirs = [view(nginx_port, path) for path in paths]
    assert theirs[0] == (200, ["SAMEORIGIN"], ["public"]) and theirs[1][2] == ["no-cache", "public"], theirs
    assert [view(p.port, path) for path in paths] == theirs
