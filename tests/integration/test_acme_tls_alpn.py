"""ACME over TLS-ALPN-01 (RFC 8737) against pebble: Porch answers the CA's acme-tls/1
handshakes on its https_port, so a host whose port 80 the CA cannot reach still gets
certificates.  Pebble's `httpPort` points at a port where nothing listens (port 80
closed), its `tlsPort` at Porch's https_port."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .helpers import free_port, wait_for_port, wait_until
from .pebble import Pebble
from .test_acme import leaf_and_chain, verify, wait_valid
from .test_port_sharing import Target, read_line
from .tlscerts import TestCA


def start(procs, porch, tmp_path, config: str, **keys):
    """(pebble, porch): pebble validating HTTP-01 on a closed port and TLS-ALPN-01
    on Porch's https_port."""
    https_port, closed = free_port(), free_port()
    pebble = Pebble(procs, tmp_path / "pebble", closed, tls_port=https_port)
    p = porch(config, https_port=https_port, acme_ca=pebble.directory, acme_ca_root=str(pebble.root_pem),
              email="admin@example.org", **keys)
    p.https_port = https_port
    return pebble, p


def served_leaf(port: int, name: str, root: str) -> bytes | None:
    ctx = ssl.create_default_context(cadata=root)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None


def acme_tls_handshake(port: int, name: str) -> tuple[str | None, bytes | None]:
    """A validator's handshake: SNI `name`, ALPN acme-tls/1 only, no verification.
    (selected ALPN, peer certificate DER), or (None, None) when refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tls:
            return tls.selected_alpn_protocol(), tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None, None


SITE = """
[[site]]
hosts = ["a.example.com", "www.a.example.com"]
proxy = "{up}"
tls = "auto"
"""


def test_certificate_issued_over_tls_alpn_01_with_port_80_closed(procs, porch, upstream, tmp_path):
    pebble, p = start(procs, porch, tmp_path, SITE.format(up=upstream().url),
                      acme_challenge_type="tls-alpn-01")
    meta = wait_valid(p, "a.example.com")
    state = p.workdir / "state"
    fullchain = state / "certs" / "a.example.com" / "fullchain.pem"
    for name in ("a.example.com", "www.a.example.com"):
        verify(pebble, fullchain, name)
    assert set(meta["names"]) == {"a.example.com", "www.a.example.com"}
    log = p.error_log_text()
    # each name was validated by an acme-tls/1 handshake on the HTTPS port, none over HTTP
    for name in ("a.example.com", "www.a.example.com"):
        assert f"TLS-ALPN-01 challenge answered client=127.0.0.1 sni={name}" in log, log
    assert "http-01" not in log
    # the validation certificates are gone once validated
    assert not list((state / "acme" / "tls-alpn-01").iterdir())
    assert not (state / "acme" / "http-01").exists()
    # the same port serves the new certificate to browsers, and HTTP over it
    leaf, _ = leaf_and_chain(fullchain)
    root = pebble.issuing_root()
    assert wait_until(lambda: served_leaf(p.https_port, "a.example.com", root) == leaf.public_bytes(Encoding.DER),
                      timeout=5), p.error_log_text()
    # with no challenge pending, acme-tls/1 is not spoken: the site's own certificate, no ALPN
    selected, der = acme_tls_handshake(p.https_port, "a.example.com")
    assert selected is None and der == leaf.public_bytes(Encoding.DER)


def test_auto_falls_back_to_tls_alpn_01_when_http_01_fails_beside_a_stream(procs, porch, upstream, tmp_path):
    """acme_challenge_type "auto" (the default): HTTP-01 fails (port 80 closed), a new
    order over TLS-ALPN-01 follows at once; the HTTPS port also passes a stream through."""
    xmpp_ca = TestCA(tmp_path, "XMPP CA")
    xcert, xkey, xserial = xmpp_ca.leaf(["chat.example.com"], "xmpp")
    t = Target(procs, tmp_path, "tls", (xcert, xkey))
    config = SITE.format(up=upstream().url) + f'\n[[stream]]\nalpn = ["xmpp-client"]\npassthrough = "{t.address}"\n'
    pebble, p = start(procs, porch, tmp_path, config)
    wait_valid(p, "a.example.com", timeout=60)
    verify(pebble, p.workdir / "state" / "certs" / "a.example.com" / "fullchain.pem", "a.example.com")
    log = p.error_log_text()
    assert "ACME: http-01 failed, trying tls-alpn-01" in log, log
    assert "TLS-ALPN-01 challenge answered" in log
    # the stream still goes to its target
    ctx = ssl.create_default_context(cafile=str(xmpp_ca.ca_path))
    ctx.set_alpn_protocols(["xmpp-client"])
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="chat.example.com") as s:
        assert x509.load_der_x509_certificate(s.getpeercert(True)).serial_number == xserial
        assert b"xmpp-client" in read_line(s)


def test_acme_tls_handshake_without_a_pending_challenge_is_not_answered(procs, porch, upstream, tmp_path):
    """A name Porch is not validating: no acme-tls/1, no validation certificate."""
    https_port = free_port()
    ca = TestCA(tmp_path, "Site CA")
    cert, key, site_serial = ca.leaf(["b.test"], "site")
    p = porch(f'[[site]]\nhosts = ["b.test"]\nproxy = "{upstream().url}"\ntls = {{ cert = "{cert}", key = "{key}" }}\n'
              + SITE.format(up=upstream().url), https_port=https_port, acme_challenge_type="tls-alpn-01",
              acme_ca="https://127.0.0.1:9/dir")  # no CA: nothing is ever pending
    wait_for_port(https_port, p.managed, what="porch https")
    selected, der = acme_tls_handshake(https_port, "b.test")
    assert selected is None and der is not None
    assert x509.load_der_x509_certificate(der).serial_number == site_serial  # the site's own
    assert acme_tls_handshake(https_port, "a.example.com") == (None, None)  # still waiting for its certificate
