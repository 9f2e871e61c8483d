"""XMPP through Porch's HTTPS port to a real Prosody (Debian's prosody 0.12), as sslh
does in Snikket's guide: `[[stream]] alpn = ["xmpp-client"]` passed through to Prosody's
direct-TLS c2s port (XEP-0368), beside Porch's own HTTPS site on the same port.

Prosody runs in the foreground (`daemonize = false`) with a config written here: its
own data dir and pid file, c2s only on direct TLS on 127.0.0.1 and a free port, a
self-signed certificate made here by openssl, one VirtualHost; stopped by its pid."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import curl_fetch, free_port, resolve, wait_for_port
from .test_port_sharing import shared_porch
from .tlscerts import TestCA

PROSODY = "/usr/bin/prosody"
XMPP_HOST = "xmpp.test"
STREAM_OPEN = (f"<?xml version='1.0'?><stream:stream to='{XMPP_HOST}' xmlns='jabber:client' "
               "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()


def prosody_config(d: Path, port: int, cert: Path, key: Path) -> str:
    # run_as_root: mod_posix refuses to start as root (the CI and this box run the suite
    # as root); it is a no-op for any other user.  Every other port list is empty so that
    # the test binds only its own port; `certificates` points at the test's directory so
    # that Prosody does not index /etc/prosody/certs.
    return f"""
daemonize = false
run_as_root = true
pidfile = "{d / 'prosody.pid'}"
data_path = "{d / 'data'}"
certificates = "{d}"
log = {{ {{ levels = {{ min = "info" }}, to = "console" }} }}
modules_enabled = {{ "tls"; "saslauth"; "posix" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ }}
s2s_ports = {{ }}
s2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ {port} }}
c2s_direct_tls_interfaces = {{ "127.0.0.1" }}
ssl = {{ certificate = "{cert}"; key = "{key}" }}

VirtualHost "{XMPP_HOST}"
"""


@pytest.fixture
def prosody(procs, tmp_path):
    """Prosody's direct-TLS port and the DER of its certificate."""
    d = tmp_path / "prosody"
    (d / "data").mkdir(parents=True)
    cert, key = d / "xmpp.crt", d / "xmpp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", f"/CN={XMPP_HOST}",
                    "-addext", f"subjectAltName=DNS:{XMPP_HOST}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    conf = d / "prosody.cfg.lua"
    conf.write_text(prosody_config(d, port, cert, key))
    managed = procs.start([PROSODY, "--config", str(conf)], cwd=d, name="prosody")
    wait_for_port(port, managed, what="prosody (c2s direct TLS)")
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return port, cert, der


def xmpp_stream_start(port: int, cafile: Path, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """Open a TLS connection with ALPN xmpp-client, send a c2s stream header (RFC 6120
    4.2) and read until the server's stream features end: (peer cert DER, bytes read)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(["xmpp-client"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=XMPP_HOST) as s:
        s.sendall(STREAM_OPEN)
        received = b""
        deadline = time.monotonic() + timeout
        while b"</stream:features>" not in received and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            received += chunk
        return s.getpeercert(binary_form=True), received


def test_xmpp_client_through_the_https_port_to_a_real_prosody(porch, upstream, prosody, tmp_path):
    xmpp_port, xmpp_cert, xmpp_der = prosody
    ca = TestCA(tmp_path, "Porch CA")
    p = shared_porch(porch, upstream().url, ca,
                     f'[[stream]]\nalpn = ["xmpp-client"]\npassthrough = "127.0.0.1:{xmpp_port}"\n')
    # the client verifies Prosody's own (self-signed) certificate, not Porch's, and
    # Prosody answers the stream header with its own header and stream features
    der, received = xmpp_stream_start(p.https_port, xmpp_cert)
    assert der == xmpp_der
    text = received.decode()
    assert "<stream:stream" in text and f"from='{XMPP_HOST}'" in text, text
    assert "<stream:features>" in text and "</stream:features>" in text, text
    # the same port still serves Porch's own site over HTTPS, with Porch's certificate
    r = curl_fetch(f"https://a.test:{p.https_port}/x", "--cacert", str(ca.ca_path),
                   *resolve("a.test", p.https_port))
    assert r.status == 200, r
    lines = [ln for ln in p.access_log_lines(2) if "PASSTHROUGH" in ln]
    assert len(lines) == 1, lines
    assert f"stream[0] {XMPP_HOST} xmpp-client -> 127.0.0.1:{xmpp_port}" in lines[0], lines
