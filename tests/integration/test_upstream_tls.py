"""https:// upstreams: verification (system store, `ca`, off), names and SNI, client
certificates, keep-alive and big bodies over TLS, handshake failures as 502/504.

The upstream is upstreams.py serving TLS with certificates this test makes (certs.py);
where the exact alert a TLS server sends matters, it is `openssl s_server`.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import threading
import time

import pytest
from websockets.asyncio.client import connect

from .certs import TestCA, self_signed
from .helpers import (
    HERE, PORCH_BIN, PYTHON, MiB, RawConn, RSSSampler, curl_fetch, free_port, get, pattern_block, site,
    toml_value, wait_for_port,
)

RSS_LIMIT_KIB = 60 * 1024


@pytest.fixture
def pki(tmp_path):
    """A private CA with a server certificate for localhost and 127.0.0.1, and another CA
    for client certificates (as in Radicale's guide, the two sides trust different roots)."""

    class PKI:
        ca = TestCA(tmp_path / "pki", "Porch Test Server CA", stem="ca")
        server = ca.issue("server", ["localhost", "127.0.0.1"])
        client_ca = TestCA(tmp_path / "pki", "Porch Test Client CA", stem="client_ca")
        client = client_ca.issue("client", ["porch client"], client=True)

    return PKI


def tls_table(**keys) -> str:
    """An `upstream_tls = { ... }` line; Path values are written as strings."""
    inner = ", ".join(f"{k} = {toml_value(v if isinstance(v, bool) else str(v))}" for k, v in keys.items())
    return f"upstream_tls = {{ {inner} }}\n"


def fetch(p, path: str = "/") -> tuple[int, dict | bytes]:
    with RawConn(p.port) as c:
        c.send(get(path))
        r = c.read_response()
    if r.header("Content-Type") == "application/json":
        return r.status, r.json()
    return r.status, r.body


# -- verification ----------------------------------------------------------------------


def test_ca_file_verifies_and_sni_and_alpn_are_sent(pki, upstream, porch):
    up = upstream(tls=(pki.server.cert, pki.server.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert)))
    status, doc = fetch(p, "/hello")
    assert status == 200, p.error_log_text()
    assert doc["path"] == "/hello"
    assert doc["tls"]["sni"] == "localhost"
    assert doc["tls"]["alpn"] == "http/1.1"
    assert doc["tls"]["version"] in ("TLSv1.2", "TLSv1.3")


def test_system_store_rejects_a_private_ca_with_502(pki, upstream, porch):
    up = upstream(tls=(pki.server.cert, pki.server.key))
    p = porch(site(f"https://localhost:{up.port}"))  # verify on by default, system CAs
    status, body = fetch(p)
    assert status == 502
    log = p.error_log_text(wait_for="certificate verify failed")
    assert "certificate verify failed" in log, log
    assert f"https://localhost:{up.port}" in log and "upstream_tls.ca" in log, log
    assert up.stats()["requests"] == 0  # no request ever reached it


def test_verify_off_accepts_a_self_signed_certificate(tmp_path, upstream, porch):
    lone = self_signed(tmp_path / "snikket", "snikket", ["snikket.internal"])  # not even our name
    up = upstream(tls=(lone.cert, lone.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(verify=False)))
    status, doc = fetch(p)
    assert status == 200, p.error_log_text()
    assert doc["tls"]["sni"] == "localhost"  # SNI is still sent


def test_ca_may_be_the_upstreams_own_certificate(tmp_path, pki, upstream, porch):
    # Radicale's guide: proxy_ssl_trusted_certificate server_cert.pem (a self-signed one).
    lone = self_signed(tmp_path / "radicale", "server", ["localhost"])
    up = upstream(tls=(lone.cert, lone.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=lone.cert)))
    assert fetch(p)[0] == 200, p.error_log_text()


def test_ca_trusts_only_that_ca(pki, tmp_path, upstream, porch):
    other = TestCA(tmp_path / "other", "Some Other CA")
    up = upstream(tls=(pki.server.cert, pki.server.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=other.cert)))
    assert fetch(p)[0] == 502
    assert "certificate verify failed" in p.error_log_text(wait_for="certificate verify failed")


def test_expired_certificate_is_502_saying_so(pki, upstream, porch):
    old = pki.ca.issue("expired", ["localhost"], days=-1)
    up = upstream(tls=(old.cert, old.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert)))
    assert fetch(p)[0] == 502
    log = p.error_log_text(wait_for="expired")
    assert "certificate verify failed: certificate has expired (renew the upstream's certificate" in log, log


def test_hostname_mismatch_is_502_and_server_name_fixes_it(pki, upstream, porch):
    named = pki.ca.issue("dav", ["dav.internal"])
    up = upstream(tls=(named.cert, named.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert)))
    assert fetch(p)[0] == 502
    log = p.error_log_text(wait_for="mismatch")
    assert "Hostname mismatch" in log and "server_name" in log, log

    p2 = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert, server_name="dav.internal")))
    status, doc = fetch(p2)
    assert status == 200, p2.error_log_text()
    assert doc["tls"]["sni"] == "dav.internal"


def test_ip_literal_is_checked_against_ip_entries_and_sends_no_sni(pki, upstream, porch):
    up = upstream(tls=(pki.server.cert, pki.server.key))
    p = porch(site(f"https://127.0.0.1:{up.port}", tls_table(ca=pki.ca.cert)))
    status, doc = fetch(p)
    assert status == 200, p.error_log_text()
    assert doc["tls"]["sni"] is None  # RFC 6066 section 3: no IP literals in SNI


# -- mutual TLS ------------------------------------------------------------------------


def test_client_certificate_is_presented(pki, upstream, porch):
    up = upstream(tls=(pki.server.cert, pki.server.key), client_ca=pki.client_ca.cert,
                  client_cert=(pki.client.cert, pki.client.key))
    p = porch(site(f"https://localhost:{up.port}",
                   tls_table(ca=pki.ca.cert, cert=pki.client.cert, key=pki.client.key)))
    status, doc = fetch(p)
    assert status == 200, p.error_log_text()
    assert doc["tls"]["client_cert"] == "porch client"


def test_without_client_certificate_the_upstream_refuses_and_client_gets_502(pki, upstream, porch):
    up = upstream(tls=(pki.server.cert, pki.server.key), client_ca=pki.client_ca.cert,
                  client_cert=(pki.client.cert, pki.client.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert)))
    assert fetch(p)[0] == 502
    assert up.stats()["requests"] == 0


@pytest.mark.parametrize("tls_max", ["1.3", "1.2"])
def test_openssl_server_requiring_a_client_certificate(pki, procs, tmp_path, porch, tls_max):
    """Against `openssl s_server -Verify`: its alert is named in the error log, with the fix."""
    port = free_port()
    version = "-tls1_3" if tls_max == "1.3" else "-tls1_2"
    server = procs.start(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", version,
                          "-cert", str(pki.server.cert), "-key", str(pki.server.key),
                          "-Verify", "1", "-verify_return_error",
                          "-CAfile", str(pki.client_ca.cert), "-www", "-quiet"],
                         cwd=tmp_path, name=f"s_server-{tls_max}")
    wait_for_port(port, server, what="openssl s_server")
    url = f"https://localhost:{port}"
    p = porch(site(url, tls_table(ca=pki.ca.cert)))
    assert fetch(p)[0] == 502
    log = p.error_log_text(wait_for="upstream_tls.cert")
    expected = "alert certificate required" if tls_max == "1.3" else "alert handshake failure"
    assert expected in log and "upstream_tls.cert" in log, log

    p2 = porch(site(url, tls_table(ca=pki.ca.cert, cert=pki.client.cert, key=pki.client.key)))
    status, body = fetch(p2)
    assert status == 200, p2.error_log_text()
    assert b"porch client" in body  # s_server -www shows the client certificate it got

    rogue = TestCA(tmp_path / "rogue", "Rogue CA").issue("rogue", ["rogue client"], client=True)
    p3 = porch(site(url, tls_table(ca=pki.ca.cert, cert=rogue.cert, key=rogue.key)))
    assert fetch(p3)[0] == 502
    log = p3.error_log_text(wait_for="unknown ca")
    assert "does not trust our client certificate" in log, log


# -- failures at connect ---------------------------------------------------------------


def test_connect_timeout_covers_the_tls_handshake(upstream, porch):
    up = upstream("hang")  # accepts TCP, reads the ClientHello, never answers it
    p = porch(site(f"https://127.0.0.1:{up.port}", 'upstream_connect_timeout = "1s"\n'))
    start = time.monotonic()
    assert fetch(p)[0] == 504
    assert time.monotonic() - start < 5
    assert "TLS handshake" in p.error_log_text(wait_for="timed out")


def test_https_to_a_plain_http_port_is_502_with_the_fix(porch):
    # A plain HTTP server answers the ClientHello as a bad request, as nginx does.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_garbage_with_400():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=answer_garbage_with_400, daemon=True)
    thread.start()
    p = porch(site(f"https://127.0.0.1:{port}", tls_table(verify=False)))
    assert fetch(p)[0] == 502
    log = p.error_log_text(wait_for="http://")
    assert "wrong version number" in log and "does not speak TLS" in log, log
    thread.join(timeout=5)


# -- keep-alive and big bodies -----------------------------------------------------------


def test_keepalive_reuses_one_tls_connection(pki, upstream, porch):
    up = upstream(tls=(pki.server.cert, pki.server.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert)))
    conn_ids = []
    for i in range(3):  # separate client connections: reuse is on the upstream side
        status, doc = fetch(p, f"/ka/{i}")
        assert status == 200
        conn_ids.append(doc["conn_id"])
    assert len(set(conn_ids)) == 1, conn_ids
    assert up.stats()["connections"] == 1


@pytest.mark.parametrize("mode", ["close-after-response", "drop-reused"])
def test_stale_pooled_tls_connection_is_retried_on_a_fresh_one(pki, upstream, porch, mode):
    # As over TCP: a pooled connection the upstream closed (idle, or as the request
    # arrives) costs the client nothing; the GET goes again on a new TLS connection.
    up = upstream(mode, tls=(pki.server.cert, pki.server.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert)))
    for i in range(4):
        status, doc = fetch(p, f"/race/{i}")
        assert status == 200, (i, p.error_log_text())
        assert doc["path"] == f"/race/{i}"
        time.sleep(0.05)


def test_64mib_both_ways_over_tls_with_bounded_memory(pki, upstream, porch):
    up = upstream(tls=(pki.server.cert, pki.server.key))
    p = porch(site(f"https://localhost:{up.port}", tls_table(ca=pki.ca.cert)))
    size = 64 * MiB
    block = pattern_block(MiB)
    with RSSSampler(p) as rss:
        with RawConn(p.port, timeout=60) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // MiB):
                c.sock.sendall(block)
            r = c.read_response()
        down = subprocess.run(f"curl -sS -H 'Host: app.test' '{p.url}/stream?size=64M' | sha256sum",
                              shell=True, capture_output=True, text=True, timeout=120)
    assert r.status == 200, p.error_log_text()
    expected = hashlib.sha256(block * (size // MiB)).hexdigest()
    assert r.json()["body_length"] == size
    assert r.json()["body_sha256"] == expected
    assert down.returncode == 0, down.stderr
    assert down.stdout.split()[0] == expected
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"


def test_check_names_a_missing_file_key_and_value(tmp_path):
    path = tmp_path / "porch.toml"
    path.write_text(site("https://localhost:5232", 'upstream_tls = { ca = "/nope/server_cert.pem" }\n'))
    r = subprocess.run([str(PORCH_BIN), "check", "-c", str(path)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert ('site[0].upstream_tls.ca: "/nope/server_cert.pem" cannot be read: No such file or directory'
            in r.stderr), r.stderr


# -- WebSockets ------------------------------------------------------------------------


def test_websocket_through_an_https_upstream(pki, procs, tmp_path, porch):
    """Snikket's /xmpp-websocket sits behind its https port: the tunnel after the 101
    runs over the upstream TLS connection."""
    port = free_port()
    server = procs.start([PYTHON, str(HERE / "ws_upstream.py"), "--port", str(port),
                          "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)],
                         cwd=tmp_path, name="wss-upstream")
    wait_for_port(port, server, what="wss upstream")
    p = porch(site(f"https://localhost:{port}", tls_table(ca=pki.ca.cert)))

    async def session():
        async with connect(f"ws://app.test:{p.port}/echo", host="127.0.0.1", port=p.port,
                           max_size=None, ping_interval=None, compression=None) as c:
            await c.send("hello over TLS")
            assert await c.recv() == "hello over TLS"
            block = bytes(range(256)) * (4 * MiB // 256)
            await c.send(block)
            assert await c.recv() == block

    asyncio.run(asyncio.wait_for(session(), 30))


# -- TLS on both sides -----------------------------------------------------------------


def test_https_client_to_porch_to_mutual_tls_upstream(pki, upstream, porch):
    """The Radicale setup end to end: curl over HTTPS to Porch, Porch over mutual TLS to
    the upstream; a 64 MiB download crosses both TLS layers with bounded memory."""
    up = upstream(tls=(pki.server.cert, pki.server.key), client_ca=pki.client_ca.cert,
                  client_cert=(pki.client.cert, pki.client.key))
    front = pki.ca.issue("front", ["app.test"])
    https_port = free_port()
    p = porch(site(f"https://localhost:{up.port}",
                   f'tls = {{ cert = "{front.cert}", key = "{front.key}" }}\n'
                   + tls_table(ca=pki.ca.cert, cert=pki.client.cert, key=pki.client.key)),
              https_port=https_port)
    wait_for_port(https_port, p.managed, what="porch https")
    url = f"https://app.test:{https_port}"
    reach = ["--cacert", str(pki.ca.cert), "--resolve", f"app.test:{https_port}:127.0.0.1"]
    r = curl_fetch(f"{url}/both", *reach)
    assert r.status == 200, (r.stderr, p.error_log_text())
    doc = r.json()
    assert doc["tls"]["client_cert"] == "porch client" and doc["tls"]["sni"] == "localhost"
    assert dict((k.lower(), v) for k, v in doc["headers"])["x-forwarded-proto"] == "https"

    with RSSSampler(p) as rss:
        down = subprocess.run(["bash", "-c", f"curl -sS {' '.join(reach)} '{url}/stream?size=64M' | sha256sum"],
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert down.stdout.split()[0] == hashlib.sha256(pattern_block(MiB) * 64).hexdigest()
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"
