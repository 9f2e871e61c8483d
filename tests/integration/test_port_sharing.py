"""Port 443 shared, as sslh does in Snikket's guide: [[stream]] passthrough by ALPN and
SNI, Porch's own sites for the rest, plain protocols by first bytes, PROXY protocol.

Real peers only: Porch, TLS and raw TCP targets (stream_targets.py, their own
processes), Python's ssl and curl as clients; PROXY headers are read by the
`proxy-protocol` package, not by Porch's code.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from .helpers import PYTHON, curl_fetch, free_port, resolve, wait_for_port, wait_until
from .tlscerts import TestCA

TARGETS = Path(__file__).parent / "stream_targets.py"


class Target:
    def __init__(self, procs, workdir: Path, mode: str, tls: tuple[Path, Path] | None = None):
        self.port = free_port()
        argv = [PYTHON, str(TARGETS), "--port", str(self.port), "--mode", mode]
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.managed = procs.start(argv, cwd=workdir, name=f"target-{mode}-{self.port}")
        wait_for_port(self.port, self.managed, what=f"target ({mode})")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def target(procs, tmp_path):
    return lambda mode, tls=None: Target(procs, tmp_path, mode, tls)


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path, "Porch CA")


def shared_porch(porch, up_url: str, ca: TestCA, streams: str, **keys):
    cert, key, _ = ca.leaf(["a.test"], "porch-site")
    keys.setdefault("https_port", free_port())
    p = porch(f'[[site]]\nhosts = ["a.test"]\nproxy = "{up_url}"\n'
              f'tls = {{ cert = "{cert}", key = "{key}" }}\n\n{streams}', **keys)
    p.https_port = keys["https_port"]
    wait_for_port(p.https_port, p.managed, what="porch https")
    return p


def tls_client(port: int, server_name: str | None, alpn: list[str] | None, cafile: Path,
               timeout: float = 5.0) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if server_name is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=server_name)


def read_line(sock) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def serial(sock: ssl.SSLSocket) -> int:
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


# -- TLS passthrough ------------------------------------------------------------------


def test_alpn_xmpp_passed_through_with_the_targets_certificate(porch, upstream, target, ca, tmp_path):
    """Snikket's guide: ALPN xmpp-client goes to Prosody's direct-TLS port, untouched:
    the client verifies the target's own certificate (another CA than Porch's)."""
    xmpp_ca = TestCA(tmp_path, "XMPP CA")
    xcert, xkey, xserial = xmpp_ca.leaf(["chat.example.com"], "xmpp")
    t = target("tls", (xcert, xkey))
    p = shared_porch(porch, upstream().url, ca, f'[[stream]]\nalpn = ["xmpp-client"]\n'
                     f'passthrough = "{t.address}"\n')
    with tls_client(p.https_port, "chat.example.com", ["xmpp-client"], xmpp_ca.ca_path) as s:
        assert serial(s) == xserial
        assert s.selected_alpn_protocol() == "xmpp-client"
        assert json.loads(read_line(s)) == {"sni": "chat.example.com", "alpn": "xmpp-client"}
        s.sendall(b"<stream:stream to='chat.example.com'>")
        assert s.recv(100) == b"<stream:stream to='chat.example.com'>"
    # the same port still serves Porch's own site, over HTTP/1.1 and h2
    for version in ("--http1.1", "--http2"):
        r = curl_fetch(f"https://a.test:{p.https_port}/x", version, "--cacert", str(ca.ca_path),
                       *resolve("a.test", p.https_port))
        assert r.status == 200, r
    with tls_client(p.https_port, "a.test", ["h2", "http/1.1"], ca.ca_path) as s:
        assert s.selected_alpn_protocol() == "h2"  # Porch's own TLS, h2 by ALPN
    line = p.access_log_lines(3)
    passthrough = [ln for ln in line if "PASSTHROUGH" in ln]
    assert len(passthrough) == 1, line
    assert f"stream[0] chat.example.com xmpp-client -> {t.address}" in passthrough[0]


def test_sni_passthrough_and_wildcards(porch, upstream, target, ca, tmp_path):
    snikket_ca = TestCA(tmp_path, "Snikket CA")
    scert, skey, sserial = snikket_ca.leaf(["chat.example.com", "*.chat.example.com"], "snikket")
    t = target("tls", (scert, skey))
    p = shared_porch(porch, upstream().url, ca, f'[[stream]]\nsni = ["chat.example.com", '
                     f'"*.chat.example.com"]\npassthrough = "{t.address}"\n')
    for name in ("chat.example.com", "share.chat.example.com"):
        with tls_client(p.https_port, name, ["http/1.1"], snikket_ca.ca_path) as s:
            assert serial(s) == sserial
            assert json.loads(read_line(s))["sni"] == name
    # a name the stream does not list is Porch's site (its certificate)
    with tls_client(p.https_port, "a.test", None, ca.ca_path) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        assert read_line(s).startswith(b"HTTP/1.1 200")


def test_hello_split_over_many_segments(porch, upstream, target, ca, tmp_path):
    """The ClientHello arrives a few bytes per TCP segment: still read, still passed."""
    xmpp_ca = TestCA(tmp_path, "XMPP CA")
    xcert, xkey, xserial = xmpp_ca.leaf(["chat.example.com"], "xmpp")
    t = target("tls", (xcert, xkey))
    p = shared_porch(porch, upstream().url, ca, f'[[stream]]\nalpn = ["xmpp-client"]\n'
                     f'passthrough = "{t.address}"\n')
    ctx = ssl.create_default_context(cafile=str(xmpp_ca.ca_path))
    ctx.set_alpn_protocols(["xmpp-client"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="chat.example.com")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(hello), 7):
            raw.sendall(hello[i:i + 7])
            time.sleep(0.002)
        while True:  # finish the handshake by hand
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())
        assert x509.load_der_x509_certificate(obj.getpeercert(True)).serial_number == xserial


# -- plain protocols ------------------------------------------------------------------


def test_ssh_silent_client_and_xmpp_first_bytes(porch, upstream, target, ca):
    ssh = target("banner")
    xmpp = target("echo")
    p = shared_porch(porch, upstream().url, ca,
                     f'[[stream]]\nprotocol = "xmpp"\npassthrough = "{xmpp.address}"\n\n'
                     f'[[stream]]\nprotocol = "ssh"\npassthrough = "{ssh.address}"\n')
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=10) as s:
        start = time.monotonic()
        assert read_line(s) == b"SSH-2.0-TestServer\r\n"  # we said nothing: sent to ssh
        assert 1.5 <= time.monotonic() - start < 6
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=10) as s:
        s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")  # a client that speaks first
        reader = s.makefile("rb")
        assert reader.readline() == b"SSH-2.0-TestServer\r\n"
        assert reader.readline() == b"SSH-2.0-OpenSSH_9.2p1\r\n"  # what we sent, echoed
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as s:
        s.sendall(b"<?xml version='1.0'?><stream:stream to='chat.example.com'>")
        assert s.recv(200).startswith(b"<?xml version='1.0'?>")
    # plain HTTP on the HTTPS port: Porch's own plain-HTTP handling (a redirect)
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert read_line(s).startswith(b"HTTP/1.1 30")


# -- PROXY protocol -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_sent_to_the_target(porch, upstream, target, ca, version):
    t = target("proxy")
    p = shared_porch(porch, upstream().url, ca, f'[[stream]]\nprotocol = "any"\n'
                     f'passthrough = "{t.address}"\nproxy_protocol = "{version}"\n')
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as s:
        s.sendall(b"hello\n")
        reader = s.makefile("rb")
        seen = json.loads(reader.readline())
        assert seen["source"] == ["127.0.0.1", s.getsockname()[1]]
        assert seen["dest"] == ["127.0.0.1", p.https_port]
        assert reader.readline() == b"hello\n"


def test_accept_proxy_protocol_from_trusted_peers_only(porch, upstream, ca):
    up = upstream()
    p = shared_porch(porch, up.url, ca, "", accept_proxy_protocol=["127.0.0.1/32"])
    # from a trusted peer (127.0.0.1): the header's source is the client
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 80\r\n"
                  b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 30"), data  # a.test redirects plain HTTP to https
    assert p.access_log_lines(1)[0].startswith("203.0.113.9 ")
    # on the HTTPS port, a v2 header then TLS: X-Forwarded-For is the header's source
    v2 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([198, 51, 100, 7, 192, 0, 2, 1])
          + (40001).to_bytes(2, "big") + (443).to_bytes(2, "big"))
    raw = socket.create_connection(("127.0.0.1", p.https_port), timeout=5)
    raw.sendall(v2)
    ctx = ssl.create_default_context(cafile=str(ca.ca_path))
    with ctx.wrap_socket(raw, server_hostname="a.test") as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    doc = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert ["X-Forwarded-For", "198.51.100.7"] in doc["headers"], doc["headers"]


def test_proxy_header_from_an_untrusted_peer_is_refused(porch, upstream, ca):
    p = shared_porch(porch, upstream().url, ca, "", accept_proxy_protocol=["10.0.0.0/8"])
    mark = p.error_log_mark()
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 80\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert read_line(s).startswith(b"HTTP/1.1 400")
    assert "not in accept_proxy_protocol" in p.error_log_text(wait_for="accept_proxy_protocol", since=mark)


# -- bounds ---------------------------------------------------------------------------


def test_partial_hello_closed_after_header_timeout(porch, upstream, target, ca):
    t = target("echo")
    p = shared_porch(porch, upstream().url, ca, f'[[stream]]\nalpn = ["xmpp-client"]\n'
                     f'passthrough = "{t.address}"\n', header_timeout="1s")
    hello = (Path(__file__).parent.parent / "unit/data/clienthello/openssl_xmpp_sni.bin").read_bytes()
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=10) as s:
        s.sendall(hello[:40])  # and never the rest (slowloris)
        start = time.monotonic()
        assert s.recv(100) == b""  # closed by Porch
        assert 0.5 <= time.monotonic() - start < 5
    assert wait_until(lambda: "header_timeout" in p.error_log_text())


def test_openssl_s_client_sni_and_alpn_combinations(porch, upstream, target, ca, tmp_path):
    """openssl s_client, as an operator checks a port by hand: which certificate each
    SNI/ALPN combination meets (the stream's target's, or Porch's own site's)."""
    xmpp_ca = TestCA(tmp_path, "XMPP CA")
    xcert, xkey, _ = xmpp_ca.leaf(["chat.example.com"], "xmpp")
    t = target("tls", (xcert, xkey))
    p = shared_porch(porch, upstream().url, ca, f'[[stream]]\nalpn = ["xmpp-client"]\n'
                     f'passthrough = "{t.address}"\n')
    cases = [  # (servername, alpn, the CA whose certificate is presented, ALPN agreed)
        ("chat.example.com", "xmpp-client", xmpp_ca, "xmpp-client"),
        (None, "xmpp-client", xmpp_ca, "xmpp-client"),  # no SNI: ALPN alone decides
        ("a.test", "h2,http/1.1", ca, "h2"),
        ("a.test", None, ca, None),
    ]
    for name, alpn, want_ca, agreed in cases:
        argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{p.https_port}",
                "-CAfile", str(want_ca.ca_path), "-verify_return_error"]
        argv += ["-servername", name] if name else ["-noservername"]
        argv += ["-alpn", alpn] if alpn else []
        out = subprocess.run(argv, input=b"", capture_output=True, timeout=15)
        text = out.stdout.decode(errors="replace")
        assert "Verify return code: 0 (ok)" in text, (name, alpn, text[-800:])
        if agreed:
            assert f"ALPN protocol: {agreed}" in text, (name, alpn)
        else:
            assert "No ALPN negotiated" in text, (name, alpn)
