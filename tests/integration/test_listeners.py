"""Listeners in the model: one host name served by two sites, one on the plain
listener and one on the TLS listener (Snikket's guide: port 80 to the app's HTTP
port, 443 to its HTTPS port), each reaching its own upstream; curl over http://,
https:// and HTTP/2."""

from __future__ import annotations

import json
import subprocess

from .helpers import PORCH_BIN, curl_fetch, free_port, resolve, wait_for_port
from .tlscerts import TestCA


def snikket_porch(porch, upstream, tmp_path):
    """chat.test: plain HTTP to one upstream, HTTPS (files) to a TLS upstream."""
    ca = TestCA(tmp_path)
    cert, key, _ = ca.leaf(["chat.test", "only-tls.test"], "site")
    app_cert, app_key, _ = ca.leaf(["localhost"], "app")
    http_app = upstream()
    https_app = upstream(tls=(app_cert, app_key))
    https_port = free_port()
    p = porch(f"""
[[site]]
hosts = ["chat.test"]
listen = "http"
proxy = "{http_app.url}"

[[site]]
hosts = ["chat.test", "only-tls.test"]
listen = ["https"]
tls = {{ cert = "{cert}", key = "{key}" }}
proxy = "{https_app.url}"
upstream_tls = {{ verify = false }}
""", https_port=https_port)
    p.https_port = https_port
    wait_for_port(https_port, p.managed, what="porch https")
    return p, ca, http_app, https_app


def test_one_host_two_sites_by_listener(porch, upstream, tmp_path):
    p, ca, http_app, https_app = snikket_porch(porch, upstream, tmp_path)

    plain = curl_fetch(f"http://chat.test:{p.port}/x", *resolve("chat.test", p.port))
    assert plain.status == 200, plain  # no redirect: this site has no certificate
    assert json.loads(plain.body)["server_port"] == http_app.port

    tls_args = ("--cacert", str(ca.ca_path), *resolve("chat.test", p.https_port))
    secure = curl_fetch(f"https://chat.test:{p.https_port}/x", "--http1.1", *tls_args)
    assert secure.status == 200, secure
    doc = json.loads(secure.body)
    assert doc["server_port"] == https_app.port and doc["tls"]["version"].startswith("TLS")

    h2 = subprocess.run(["curl", "-sS", "--http2", "-w", "\n%{http_version} %{http_code}", *tls_args,
                         f"https://chat.test:{p.https_port}/y"], capture_output=True, text=True, timeout=60)
    body, _, status = h2.stdout.rpartition("\n")
    assert status == "2 200", h2
    assert json.loads(body)["server_port"] == https_app.port


def test_a_name_on_the_tls_listener_only_redirects_on_plain_http(porch, upstream, tmp_path):
    """No site of the plain listener has only-tls.test: the TLS site's stand-in there
    sends the browser to https://, and serves nothing over plain HTTP."""
    p, ca, http_app, https_app = snikket_porch(porch, upstream, tmp_path)
    plain = curl_fetch(f"http://only-tls.test:{p.port}/a?b", *resolve("only-tls.test", p.port))
    assert plain.status == 308, plain
    assert plain.header("Location") == f"https://only-tls.test:{p.https_port}/a?b"
    assert http_app.stats()["requests"] == 0 and https_app.stats()["requests"] == 0
    secure = curl_fetch(f"https://only-tls.test:{p.https_port}/", "--cacert", str(ca.ca_path),
                        *resolve("only-tls.test", p.https_port))
    assert secure.status == 200, secure
    assert json.loads(secure.body)["server_port"] == https_app.port


def test_check_names_the_listener_problems(tmp_path):
    config = tmp_path / "porch.toml"
    config.write_text("""
[[site]]
hosts = ["chat.test"]
proxy = "http://127.0.0.1:1"

[[site]]
hosts = ["chat.test"]
listen = ["https", ":8443"]
proxy = "http://127.0.0.1:2"
""")
    r = subprocess.run([str(PORCH_BIN), "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert (f'{config}:8: site[1].listen: ":8443": Porch listens on http_port 80 and https_port 443;'
            ' write "http", "https", ":80" or ":443"') in r.stderr, r.stderr


TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"  # RFC 8555 8.3's example
KEYAUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def publish(p, token: str, keyauth: str) -> None:
    """What the ACME manager does: the key authorization under acme/http-01/<token>."""
    d = p.workdir / "state" / "acme" / "http-01"
    d.mkdir(parents=True, exist_ok=True)
    (d / token).write_text(keyauth)


def test_http01_for_the_tls_site_is_answered_on_the_plain_listener(porch, upstream):
    """The HTTPS site of chat.example.com gets its certificate from ACME, and port 80
    belongs to the plain site of the same name: Porch's tokens are answered there,
    others go on to that site's upstream (Snikket answers its own); a TLS-only name
    with no plain site answers them from its stand-in."""
    http_app, https_app = upstream(), upstream()
    p = porch(f"""
[[site]]
hosts = ["chat.example.com"]
listen = "http"
proxy = "{http_app.url}"

[[site]]
hosts = ["chat.example.com", "groups.chat.example.com"]
listen = "https"
tls = "auto"
proxy = "{https_app.url}"
""", acme_ca="https://127.0.0.1:1/dir", https_port=free_port())
    publish(p, TOKEN, KEYAUTH)
    for host in ("chat.example.com", "groups.chat.example.com"):
        r = curl_fetch(f"http://{host}:{p.port}/.well-known/acme-challenge/{TOKEN}", *resolve(host, p.port))
        assert (r.status, r.body) == (200, KEYAUTH.encode()), (host, r)
    assert http_app.stats()["requests"] == 0
    other = f"http://chat.example.com:{p.port}/.well-known/acme-challenge/{TOKEN[:-1]}x"
    r = curl_fetch(other, *resolve("chat.example.com", p.port))
    assert r.status == 200 and json.loads(r.body)["server_port"] == http_app.port, r
    r = curl_fetch(f"http://chat.example.com:{p.port}/", *resolve("chat.example.com", p.port))
    assert r.status == 200 and json.loads(r.body)["server_port"] == http_app.port, r
    assert https_app.stats()["requests"] == 0
