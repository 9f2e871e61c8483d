"""The admin API against a running Porch: auth (TCP token, unix socket), /config,
POST /load good and bad, /certificates, /upstreams and drain, /metrics parsed with
prometheus-client's own parser after HTTP/1.1 and HTTP/2 traffic over two workers,
and per-site log files (issue 17)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import PORCH_BIN, curl_fetch, free_port, resolve, wait_for_port, wait_until

TOKEN = "test-admin-token-0123456789"


def admin_request(p, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
                  headers: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", p.admin_port, timeout=15)
    try:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def site(host: str, proxy: str, extra: str = "") -> str:
    return f'[[site]]\nhosts = ["{host}"]\nproxy = {proxy}\n{extra}\n'


@pytest.fixture
def admin_porch(porch):
    def start(sites: str, **keys):
        port = free_port()
        keys.setdefault("admin", f"127.0.0.1:{port}")
        keys.setdefault("admin_token", TOKEN)
        p = porch(sites, **keys)
        p.admin_port = port
        # The log line, not connects in a loop: a connect to a closed loopback port in
        # the ephemeral range may connect to itself, and then holds the port.
        text = p.error_log_text(wait_for="admin API on|admin API: cannot", timeout=15)
        assert f"admin API on 127.0.0.1:{port}" in text, text
        return p

    return start


def get(port: int, host: str, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_token_needed_over_tcp(admin_porch, upstream):
    up = upstream()
    p = admin_porch(site("a.test", f'"{up.url}"'))
    status, body, headers = admin_request(p, "GET", "/config", token=None)
    assert status == 401 and b"Bearer" in body and headers["www-authenticate"].startswith("Bearer")
    assert admin_request(p, "GET", "/config", token="wrong-token-0123456789")[0] == 401
    assert admin_request(p, "GET", "/metrics", token=TOKEN[:-1])[0] == 401
    assert admin_request(p, "POST", "/load", b"", token=None)[0] == 401
    status, body, _ = admin_request(p, "GET", "/config?format=json")
    assert status == 200
    config = json.loads(body)
    assert config["sites"][0]["hosts"] == ["a.test"]
    assert "admin_token" not in config["porch"]  # never shown
    assert TOKEN.encode() not in body
    # Not on the public port: the admin paths there are the site's (proxied upstream)
    status, body = get(p.port, "a.test", "/config")
    assert json.loads(body)["path"] == "/config"


def test_config_is_the_dump_by_default_and_loads_back(admin_porch, upstream):
    """GET /config: `porch check --dump`'s porch.toml (default and ?format=toml), the
    token left out; with the token written back, POST /load takes it as it is."""
    up = upstream()
    p = admin_porch(site("a.test", f'"{up.url}"'))
    status, body, headers = admin_request(p, "GET", "/config")
    assert status == 200 and headers["content-type"].startswith("application/toml")
    assert admin_request(p, "GET", "/config?format=toml")[1] == body
    dumped = tomllib.loads(body.decode())
    assert dumped["site"][0]["hosts"] == ["a.test"]
    assert dumped["site"][0]["route"][0]["proxy"] == up.url
    assert dumped["porch"]["admin"] == f"127.0.0.1:{p.admin_port}"
    assert "admin_token" not in dumped["porch"] and TOKEN.encode() not in body
    assert b"# admin_token: set, not shown" in body
    assert b"site[0] a.test" in admin_request(p, "GET", "/config?format=text")[1]  # check's report
    status, message, _ = admin_request(p, "GET", "/config?format=yaml")
    assert status == 400 and b"toml (the default), json or text" in message
    again = body.decode().replace("[porch]\n", f'[porch]\nadmin_token = "{TOKEN}"\n', 1)
    status, message, _ = admin_request(p, "POST", "/load", again.encode(), headers={"Content-Type": "application/toml"})
    assert status == 200, message
    assert get(p.port, "a.test")[0] == 200


def test_unix_socket_needs_no_token(porch, upstream, tmp_path):
    up = upstream()
    path = str(tmp_path / "admin.sock")
    p = porch(site("a.test", f'"{up.url}"'), admin=path)
    assert wait_until(lambda: os.path.exists(path), timeout=15)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    out = subprocess.run(["curl", "-sS", "--unix-socket", path, "-w", "\n%{http_code}", "http://admin/upstreams"],
                         capture_output=True, text=True, timeout=15)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", out
    assert json.loads(body)[0]["address"] == up.url


def test_post_load_bad_changes_nothing_good_is_served(admin_porch, upstream, tmp_path):
    up = upstream()
    p = admin_porch(site("old.test", f'"{up.url}"'))
    bad = p.config_path.read_text().replace('"old.test"', '"new.test"').replace(up.url, "htp://nowhere")
    status, body, _ = admin_request(p, "POST", "/load", bad.encode(), headers={"Content-Type": "application/toml"})
    assert status == 400
    # porch check's own words for the same text
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text(bad)
    check = subprocess.run([str(PORCH_BIN), "check", "-c", str(bad_file)], capture_output=True, text=True)
    assert check.returncode == 1
    # each problem at its line of the body, as check names it at its line of the file
    assert body.decode().splitlines()[1:] == check.stderr.replace(str(bad_file), "POST /load").splitlines()[1:]
    assert body.decode().startswith("porch: POST /load: configuration is not valid:")
    assert 'site[0].proxy: "htp://nowhere" is not an http:// or https:// URL' in body.decode()
    assert get(p.port, "old.test")[0] == 200  # still the old config
    assert get(p.port, "new.test")[0] == 404
    # Not TOML by its type: refused before reading it
    status, body, _ = admin_request(p, "POST", "/load", b"{}", headers={"Content-Type": "application/json"})
    assert status == 415
    good = p.config_path.read_text().replace('"old.test"', '"new.test"')
    status, body, _ = admin_request(p, "POST", "/load", good.encode(), headers={"Content-Type": "application/toml"})
    assert status == 200, body
    assert b"reloaded" in body
    assert get(p.port, "new.test")[0] == 200
    assert get(p.port, "old.test")[0] == 404
    status, body, _ = admin_request(p, "GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert [(s.labels["outcome"], s.value) for s in families["porch_reloads"].samples
            if s.name == "porch_reloads_total"] == [("failed", 0.0), ("ok", 1.0)]


def test_certificates(admin_porch, upstream):
    up = upstream()
    https = free_port()
    p = admin_porch(site("local.test", f'"{up.url}"', 'tls = "internal"'), https_port=https, tls=None)
    wait_for_port(https, p.managed, what="porch https")
    status, body, _ = admin_request(p, "GET", "/certificates")
    assert status == 200
    (cert,) = json.loads(body)
    assert cert["names"] == ["local.test"]
    assert cert["source"] == "internal" and cert["state"] == "valid"
    assert "Porch" in cert["issuer"], cert
    assert 0.9 < cert["days_left"] <= 1.0  # the local CA's leaves live a day
    status, body, _ = admin_request(p, "GET", "/metrics")
    (family,) = [f for f in text_string_to_metric_families(body.decode()) if f.name == "porch_certificate_expiry_seconds"]
    assert 0.9 * 86400 < family.samples[0].value <= 86400


def served_by(port: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        status, body = get(port, "pool.test")
        assert status == 200
        out.append(json.loads(body)["server_port"])
    return out


def test_upstreams_and_drain(admin_porch, upstream):
    a, b, lone = upstream(), upstream(), upstream()
    p = admin_porch(site("pool.test", f'["{a.url}", "{b.url}"]') + site("lone.test", f'"{lone.url}"'))
    assert set(served_by(p.port, 6)) == {a.port, b.port}
    status, body, _ = admin_request(p, "GET", "/upstreams")
    targets = {t["address"]: t for t in json.loads(body)}
    assert targets[a.url]["state"] == "up" and targets[a.url]["routes"] == ["pool.test/"]
    assert targets[a.url]["in_flight"] == 0 and targets[a.url]["failures"] == 0
    status, body, _ = admin_request(p, "POST", f"/upstreams/127.0.0.1:{a.port}/drain")
    assert status == 200, body
    assert wait_until(lambda: set(served_by(p.port, 4)) == {b.port}, timeout=5)
    assert set(served_by(p.port, 20)) == {b.port}
    status, body, _ = admin_request(p, "GET", "/upstreams")
    assert {t["address"]: t["state"] for t in json.loads(body)}[a.url] == "drained"
    # the lone target of a site cannot be drained: nothing would serve it
    status, body, _ = admin_request(p, "POST", f"/upstreams/127.0.0.1:{lone.port}/drain")
    assert status == 400 and b"only target" in body
    assert admin_request(p, "POST", "/upstreams/127.0.0.1:1/drain")[0] == 404
    assert admin_request(p, "GET", f"/upstreams/127.0.0.1:{a.port}/drain")[0] == 405
    status, body, _ = admin_request(p, "POST", f"/upstreams/{a.url.replace('/', '%2F')}/undrain")
    assert status == 200, body
    assert wait_until(lambda: a.port in served_by(p.port, 4), timeout=5)


def scrape(p) -> dict:
    status, body, headers = admin_request(p, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(families: dict, family: str, sample: str, **labels) -> float:
    return sum(s.value for s in families[family].samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_add_up_over_workers_and_protocols(admin_porch, upstream):
    up = upstream()
    https = free_port()
    p = admin_porch(site("app.test", f'"{up.url}"', 'redirect_http = false'), workers=2, https_port=https,
                    tls="internal")
    wait_for_port(https, p.managed, what="porch https")
    p.wait_workers(2)
    h1, h2, missing = 40, 30, 7

    def one_h1(i: int) -> int:
        return get(p.port, "app.test", f"/x{i}")[0]

    def one_h2(i: int) -> int:
        return curl_fetch(f"https://app.test:{https}/y{i}", "--http2", "-k", *resolve("app.test", https)).status

    with ThreadPoolExecutor(8) as pool:  # separate connections: both workers take some
        assert set(pool.map(one_h1, range(h1))) == {200}
        assert set(pool.map(one_h2, range(h2))) == {200}
        assert set(pool.map(lambda i: get(p.port, "nowhere.test")[0], range(missing))) == {404}
    m = scrape(p)
    assert value(m, "porch_requests", "porch_requests_total", site="app.test", protocol="HTTP/1.1",
                 status_class="2xx") == h1
    assert value(m, "porch_requests", "porch_requests_total", site="app.test", protocol="HTTP/2",
                 status_class="2xx") == h2
    assert value(m, "porch_requests", "porch_requests_total", site="-", status_class="4xx") == missing
    assert value(m, "porch_request_duration_seconds", "porch_request_duration_seconds_count", site="app.test") == h1 + h2
    assert value(m, "porch_upstream_duration_seconds", "porch_upstream_duration_seconds_count",
                 site="app.test") == h1 + h2
    assert value(m, "porch_request_duration_seconds", "porch_request_duration_seconds_bucket", site="app.test",
                 le="+Inf") == h1 + h2
    assert value(m, "porch_sent_bytes", "porch_sent_bytes_total", site="app.test") > 0
    assert value(m, "porch_workers", "porch_workers") == 2
    assert value(m, "porch_rate_limit_rejections", "porch_rate_limit_rejections_total") == 0
    assert value(m, "porch_upstream_up", "porch_upstream_up", target=up.url) == 1
    # both workers counted: each answered the scrape with its own share
    # (the sum above would fall short if one worker's numbers were missing)
    assert all(name.startswith("porch_") for name in m)
    # a reload replaces the workers: what they counted stays
    assert p.reload().returncode == 0
    m = scrape(p)
    assert value(m, "porch_requests", "porch_requests_total", site="app.test") == h1 + h2


def test_per_site_logs_and_reopen(porch, upstream, tmp_path):
    up = upstream()
    own_access, own_error = tmp_path / "own-access.log", tmp_path / "own-error.log"
    p = porch(site("own.test", f'"{up.url}"', f'access_log = "{own_access}"\nerror_log = "{own_error}"')
              + site("dead.test", '"http://127.0.0.1:1"')
              + site("owndead.test", '"http://127.0.0.1:1"', f'error_log = "{own_error}"'
                     '\naccess_log_format = "json"')
              + site("plain.test", f'"{up.url}"'))
    assert get(p.port, "own.test", "/mine")[0] == 200
    assert get(p.port, "plain.test", "/global")[0] == 200
    assert get(p.port, "owndead.test", "/gone")[0] == 502
    assert get(p.port, "dead.test", "/gone2")[0] == 502
    assert wait_until(lambda: own_access.exists() and "/mine" in own_access.read_text(), timeout=5)
    lines = p.access_log_lines(3)
    assert any("/global" in ln for ln in lines) and not any("/mine" in ln for ln in lines)
    json_line = next(json.loads(ln) for ln in lines if "/gone\"" in ln or '"/gone"' in ln)
    assert json_line["status"] == 502 and json_line["host"] == "owndead.test"  # its own format, the global file
    assert wait_until(lambda: own_error.exists() and "owndead.test" in own_error.read_text(), timeout=5)
    assert "dead.test" in p.error_log_text(wait_for="site=dead.test")
    assert "site=owndead.test" not in p.error_log_text()
    # logrotate: move the file, SIGUSR1, the next line lands in a new file of that name
    shutil.move(own_access, tmp_path / "own-access.log.1")
    p.signal(signal.SIGUSR1)
    p.error_log_text(wait_for="log files reopened")
    sent = []

    def landed_in_new_file() -> bool:  # the workers reopen within moments of the signal
        sent.append(f"/after{len(sent)} ")
        assert get(p.port, "own.test", sent[-1].strip())[0] == 200
        return own_access.exists() and any(path in own_access.read_text() for path in sent)

    assert wait_until(landed_in_new_file, timeout=10, interval=0.1)

    def both() -> str:
        return (tmp_path / "own-access.log.1").read_text() + own_access.read_text()

    assert wait_until(lambda: all(both().count(path) == 1 for path in sent), timeout=5)  # none lost, none twice


def test_porch_status(admin_porch, upstream, porch):
    up = upstream()
    p = admin_porch(site("shop.test", f'["{up.url}", "http://127.0.0.1:1"]'))
    assert get(p.port, "shop.test")[0] == 200
    out = subprocess.run([str(PORCH_BIN), "status", "-c", str(p.config_path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "shop.test (tls off): / -> " + up.url in out.stdout
    assert f"{up.url}  up  in flight 0  failures 0" in out.stdout
    assert "requests 1 " in out.stdout
    # without the admin API: says what to set
    q = porch(site("other.test", f'"{up.url}"'))
    out = subprocess.run([str(PORCH_BIN), "status", "-c", str(q.config_path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "set [porch] admin" in out.stderr
