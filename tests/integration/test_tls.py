"""HTTPS serving: SNI, versions, certificate files reloaded, local CA, redirects, HSTS.

Real processes only: Porch, the echo upstream, curl, openssl and Python's ssl module as
clients.  Certificates are made by the tests (tlscerts.py) or by Porch's local CA.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from .helpers import (PORCH_BIN, ClosedBeforeResponse, RawConn, curl_fetch, free_port, get,
                      refused_port, resolve, site, wait_for_port, wait_until)
from .tlscerts import TestCA, write_atomic

# The TLS 1.1 control below needs the deprecated TLSVersion members.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")


class TlsConn(RawConn):
    """RawConn over TLS: `server_name` is sent as SNI (not for IP addresses, as every
    client does); `cafile` None skips verification."""

    def __init__(self, port: int, server_name: str | None, cafile: Path | None, *,
                 versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
                 session: ssl.SSLSession | None = None, context: ssl.SSLContext | None = None,
                 timeout: float = 5.0):
        ctx = context or client_context(cafile, versions)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_name, session=session)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    def peer_cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.sock.getpeercert(binary_form=True))

    def request(self, path: str = "/", host: str = "a.test") -> object:
        self.send(get(path, host=host))
        return self.read_response()


def client_context(cafile: Path | None, versions=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if versions is not None:
        ctx.minimum_version, ctx.maximum_version = versions
        if versions[0] < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client even try TLS 1.1
    return ctx


def client_speaks(versions, cert_key, cafile) -> bool:
    """Control: a plain Python TLS server that allows `versions` completes a handshake
    with our client context (so a refusal by Porch is Porch's doing)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version, server_ctx.maximum_version = versions
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(*map(str, cert_key))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        done = {}

        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    done["version"] = tls.version()
            except (ssl.SSLError, OSError) as exc:
                done["error"] = exc

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with TlsConn(port, "a.test", cafile, versions=versions) as c:
                version = c.sock.version()
        finally:
            thread.join(5)
    return version in ("TLSv1", "TLSv1.1")


def names_of(cert: x509.Certificate) -> list[str]:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in sans]


@pytest.fixture
def certs(tmp_path):
    ca = TestCA(tmp_path)
    return ca


def tls_porch(porch, sites: str, **keys):
    keys.setdefault("https_port", free_port())
    p = porch(sites, **keys)
    p.https_port = keys["https_port"]
    wait_for_port(p.https_port, p.managed, what="porch https")
    return p


def files(cert: Path, key: Path) -> str:
    return f'tls = {{ cert = "{cert}", key = "{key}" }}\n'


# -- SNI -------------------------------------------------------------------------------


def test_sni_selects_each_sites_certificate_and_unknown_names_are_refused(porch, upstream, certs):
    up = upstream()
    a_cert, a_key, a_serial = certs.leaf(["a.test"], "a")
    w_cert, w_key, w_serial = certs.leaf(["*.wild.test"], "wild")
    p = tls_porch(porch, site(up.url, files(a_cert, a_key), host="a.test") + "\n"
                  + site(up.url, files(w_cert, w_key), host="*.wild.test"))
    with TlsConn(p.https_port, "a.test", certs.ca_path) as c:
        assert c.peer_cert().serial_number == a_serial
        assert c.request(host="a.test").status == 200
    with TlsConn(p.https_port, "x.wild.test", certs.ca_path) as c:  # wildcard, verified
        assert c.peer_cert().serial_number == w_serial
    # curl, verifying against the test CA, for both names
    for name in ("a.test", "x.wild.test"):
        r = curl_fetch(f"https://{name}:{p.https_port}/", "--cacert", str(certs.ca_path),
                       *resolve(name, p.https_port))
        assert r.rc == 0 and r.status == 200, r.stderr
    # a name no site has: the handshake fails, no certificate of another site is shown
    for name in ("other.test", None):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            TlsConn(p.https_port, name, None)
    r = curl_fetch(f"https://other.test:{p.https_port}/", "-k", *resolve("other.test", p.https_port))
    assert r.rc == 35, (r.rc, r.stderr)  # curl: SSL connect error
    assert "no site for this server name" in p.error_log_text(wait_for="other.test")


def test_catch_all_files_certificate_is_the_default_for_unknown_names(porch, upstream, certs):
    up = upstream()
    a_cert, a_key, a_serial = certs.leaf(["a.test"], "a")
    d_cert, d_key, d_serial = certs.leaf(["default.test"], "default")
    p = tls_porch(porch, site(up.url, files(a_cert, a_key), host="a.test")
                  + f'\n[[site]]\nproxy = "{up.url}"\n' + files(d_cert, d_key))
    with TlsConn(p.https_port, "a.test", None) as c:
        assert c.peer_cert().serial_number == a_serial
    for name in ("unknown.test", None):
        with TlsConn(p.https_port, name, None) as c:
            assert c.peer_cert().serial_number == d_serial
            assert c.request(host="unknown.test").status == 200


# -- versions, ALPN, resumption ---------------------------------------------------------


def test_tls_13_and_12_work_11_is_refused(porch, upstream, certs):
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"))
    V = ssl.TLSVersion
    for version in (V.TLSv1_3, V.TLSv1_2):
        with TlsConn(p.https_port, "a.test", certs.ca_path, versions=(version, version)) as c:
            assert c.sock.version() == version.name.replace("_", ".")
            assert c.sock.selected_alpn_protocol() is None  # the client offered none
            assert c.request().status == 200
    old = (V.TLSv1, V.TLSv1_1)
    assert client_speaks(old, certs.leaf(["a.test"], "control")[:2], certs.ca_path)  # the client can
    with pytest.raises((ssl.SSLError, ConnectionError)):
        TlsConn(p.https_port, "a.test", certs.ca_path, versions=old)
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{p.https_port}",
                          "-servername", "a.test", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
                         input="", capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and "BEGIN CERTIFICATE" not in out.stdout, out.stdout
    # ALPN: h2 first when offered (test_h2.py), http/1.1 for a client offering only it
    ctx = client_context(certs.ca_path)
    ctx.set_alpn_protocols(["http/1.1"])
    with TlsConn(p.https_port, "a.test", None, context=ctx) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert c.request(host="a.test").status == 200


def test_tls_ciphers_setting(porch, upstream, certs):
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"),
                  tls_ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
    V = ssl.TLSVersion
    for cipher, works in (("ECDHE-ECDSA-AES256-GCM-SHA384", True), ("ECDHE-ECDSA-AES128-GCM-SHA256", False)):
        ctx = client_context(certs.ca_path, (V.TLSv1_2, V.TLSv1_2))
        ctx.set_ciphers(cipher)  # alone, this one is in Porch's default list
        if works:
            with TlsConn(p.https_port, "a.test", None, context=ctx) as c:
                assert c.sock.cipher()[0] == cipher and c.request().status == 200
        else:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                TlsConn(p.https_port, "a.test", None, context=ctx)


def test_tls_protocols_setting_and_session_resumption(porch, upstream, certs):
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"), tls_protocols=["1.3"])
    V = ssl.TLSVersion
    with pytest.raises((ssl.SSLError, ConnectionError)):
        TlsConn(p.https_port, "a.test", certs.ca_path, versions=(V.TLSv1_2, V.TLSv1_2))
    ctx = client_context(certs.ca_path)
    with TlsConn(p.https_port, "a.test", None, context=ctx) as c:
        assert c.request().status == 200  # the TLS 1.3 ticket arrives with the response
        session = c.sock.session
        assert not c.sock.session_reused
    with TlsConn(p.https_port, "a.test", None, context=ctx, session=session) as c:
        assert c.sock.session_reused
        assert c.request().status == 200


# -- certificate files replaced on disk ----------------------------------------------


def test_files_replaced_on_disk_are_served_without_restart(porch, upstream, certs):
    up = upstream()
    cert, key, first = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"))
    held = TlsConn(p.https_port, "a.test", certs.ca_path)
    assert held.request().status == 200
    mark = p.error_log_mark()
    _, _, second = certs.leaf(["a.test"], "a")  # certbot renew: new files renamed over the old

    def serial() -> int:
        with TlsConn(p.https_port, "a.test", certs.ca_path) as c:
            return c.peer_cert().serial_number

    assert wait_until(lambda: serial() == second, timeout=5), "new certificate not served"
    assert "new certificate in use" in p.error_log_text(since=mark)
    # the connection opened before keeps its certificate and keeps working
    assert held.peer_cert().serial_number == first
    assert held.request().status == 200
    held.close()
    # a broken replacement (key of another certificate) is refused; the last good one serves
    other_cert, _, _ = certs.leaf(["a.test"], "other")
    mark = p.error_log_mark()
    write_atomic(cert, other_cert.read_bytes())
    # (logged once the files have been still for a moment: a writer may be between them)
    assert "cannot load" in p.error_log_text(wait_for="cannot load", since=mark, timeout=8)
    assert serial() == second
    assert p.managed.running()


def test_bad_certificate_files_stop_the_start_with_the_key_path(tmp_path, certs):
    cert, _, _ = certs.leaf(["a.test"], "a")
    _, other_key, _ = certs.leaf(["a.test"], "b")
    config = tmp_path / "porch.toml"
    config.write_text(f'[porch]\nhttp_port = {free_port()}\nhttps_port = {free_port()}\n'
                      f'bind = ["127.0.0.1"]\nstate_dir = "{tmp_path}/state"\n'
                      f'[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:1"\n' + files(cert, other_key))
    r = subprocess.run([str(PORCH_BIN), "run", "-c", str(config)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    # checked at load, as `porch check` does (config/checks.py), in words
    assert (f'site[0].tls.key: "{other_key}" is not the private key of the certificate in "{cert}"'
            in r.stderr), r.stderr


# -- local CA ----------------------------------------------------------------------------


def test_internal_ca_leaf_verifies_against_the_root_porch_trust_prints(porch, upstream, tmp_path):
    up = upstream()
    p = tls_porch(porch, site(up.url, 'tls = "internal"\n', host="localhost")
                  + f'\n[[site]]\nhosts = ["127.0.0.1", "app.test"]\nproxy = "{up.url}"\n', tls=None)
    r = subprocess.run([str(PORCH_BIN), "trust", "-c", str(p.config_path)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("-----BEGIN CERTIFICATE-----") and r.stdout.count("BEGIN") == 1
    assert "update-ca-certificates" in r.stderr and "/usr/local/share/ca-certificates" in r.stderr
    root = tmp_path / "root.pem"
    root.write_text(r.stdout)
    for name in ("localhost", "app.test"):
        res = curl_fetch(f"https://{name}:{p.https_port}/", "--cacert", str(root), *resolve(name, p.https_port))
        assert res.rc == 0 and res.status == 200, res.stderr
    res = curl_fetch(f"https://127.0.0.1:{p.https_port}/", "--cacert", str(root))  # no SNI: IP site
    assert res.rc == 0 and res.status == 200, res.stderr
    with TlsConn(p.https_port, "localhost", root) as c:
        leaf = c.peer_cert()
        assert names_of(leaf) == ["localhost"]
        life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert life.total_seconds() <= 26 * 3600  # short-lived
    # keys are private, the layout is the one `porch certs` reads
    state = p.workdir / "state"
    for key in ("ca/root.key", "ca/intermediate.key", "certs/localhost/privkey.pem"):
        assert (state / key).stat().st_mode & 0o777 == 0o600, key
    meta = json.loads((state / "certs/localhost/meta.json").read_text())
    assert meta["source"] == "internal" and meta["names"] == ["localhost"] and meta["state"] == "valid"
    # a restart reuses the CA and the leaf
    before = (state / "ca/root.pem").read_bytes(), (state / "certs/localhost/fullchain.pem").read_bytes()
    p.stop()
    p2 = tls_porch(porch, site(up.url, 'tls = "internal"\n', host="localhost"), state_dir=str(state))
    assert (state / "ca/root.pem").read_bytes() == before[0]
    assert (state / "certs/localhost/fullchain.pem").read_bytes() == before[1]
    res = curl_fetch(f"https://localhost:{p2.https_port}/", "--cacert", str(root), *resolve("localhost", p2.https_port))
    assert res.status == 200, res.stderr


# -- port 80: redirect, challenge path, redirect_http = false -----------------------------


def test_plain_http_redirects_to_https_keeping_path_and_query(porch, upstream, certs):
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"))
    r = curl_fetch(f"http://a.test:{p.port}/some/path?x=1&y=%20", *resolve("a.test", p.port))
    assert r.status == 308
    assert r.header("location") == f"https://a.test:{p.https_port}/some/path?x=1&y=%20"
    with RawConn(p.port) as c:  # POST keeps its method with 308; the body is not read
        c.send(b"POST /form HTTP/1.1\r\nHost: A.test\r\nContent-Length: 3\r\n\r\nabc")
        resp = c.read_response()
        assert resp.status == 308 and resp.header("location") == f"https://a.test:{p.https_port}/form"
    assert up.stats()["requests"] == 0
    # following the redirect ends on the site over HTTPS
    r = curl_fetch(f"http://a.test:{p.port}/x?q=1", "-L", "--cacert", str(certs.ca_path),
                   *resolve("a.test", p.port), *resolve("a.test", p.https_port))
    assert r.status == 200 and r.json()["target"] == "/x?q=1", r.stderr
    # the ACME challenge path is never redirected (the responder's place; routed until then)
    r = curl_fetch(f"http://a.test:{p.port}/.well-known/acme-challenge/tok123", *resolve("a.test", p.port))
    assert r.status != 308 and r.header("location") is None
    assert r.status == 200 and r.json()["path"] == "/.well-known/acme-challenge/tok123"


def test_redirect_http_false_serves_plain_http_too(porch, upstream, certs):
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key) + "redirect_http = false\nhsts = \"1y\"\n", host="a.test"))
    r = curl_fetch(f"http://a.test:{p.port}/plain", *resolve("a.test", p.port))
    assert r.status == 200 and r.json()["path"] == "/plain"
    assert r.header("strict-transport-security") is None  # never over plain HTTP (RFC 6797 7.2)
    r = curl_fetch(f"https://a.test:{p.https_port}/tls", "--cacert", str(certs.ca_path), *resolve("a.test", p.https_port))
    assert r.status == 200 and r.header("strict-transport-security") == "max-age=31536000"


# -- what reaches the upstream and the client over HTTPS --------------------------------


def test_hsts_on_https_responses_including_porchs_own_errors(porch, upstream, certs):
    up = upstream()
    dead = refused_port()
    cert, key, _ = certs.leaf(["a.test"], "a")
    extra = files(cert, key) + 'hsts = { max_age = "180d", include_subdomains = true }\n' \
        + f'  [[site.route]]\n  path = "/dead/"\n  proxy = "http://127.0.0.1:{dead}"\n'
    p = tls_porch(porch, site(up.url, extra, host="a.test"))
    want = "max-age=15552000; includeSubDomains"
    with TlsConn(p.https_port, "a.test", certs.ca_path) as c:
        ok = c.request("/ok")
        assert ok.status == 200 and ok.header_all("strict-transport-security") == [want]
        # the app's own header is replaced, not repeated (a browser heeds the first)
        app = c.request("/app?h=Strict-Transport-Security:max-age=0")
        assert app.status == 200 and app.header_all("strict-transport-security") == [want]
        bad = c.request("/dead/x")
        assert bad.status == 502 and bad.header_all("strict-transport-security") == [want]
    with TlsConn(p.https_port, "a.test", certs.ca_path) as c:  # an early answer (route found)
        c.send(b"GET /ok HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        resp = c.read_response()
        assert resp.status == 400 and resp.header("strict-transport-security") == want


def test_forwarding_headers_say_https_and_the_https_port(porch, upstream, certs):
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"))
    with TlsConn(p.https_port, "a.test", certs.ca_path) as c:
        doc = c.request("/fwd", host=f"a.test:{p.https_port}").json()
    headers = {k.lower(): v for k, v in doc["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-port"] == str(p.https_port)
    assert headers["x-forwarded-host"] == f"a.test:{p.https_port}"


# -- tls = "auto": waiting for the ACME manager's files ---------------------------------


def test_auto_site_waits_for_its_certificate_then_serves_it_without_restart(porch, upstream, certs):
    up = upstream()
    name = "app.example.org"
    other_cert, other_key, _ = certs.leaf(["other.test"], "other")
    # The ACME manager runs too: point it at a port where nothing listens, so that it
    # fails (logged, retried later) and this test plays its part by writing the files.
    p = tls_porch(porch, site(up.url, "", host=name) + "\n" + site(up.url, files(other_cert, other_key), host="other.test"),
                  tls=None, acme_ca=f"https://127.0.0.1:{refused_port()}/dir")
    assert "waiting for its certificate" in p.error_log_text(wait_for="waiting for its certificate")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        TlsConn(p.https_port, name, None)
    assert "still waiting for its certificate" in p.error_log_text(wait_for="still waiting")
    with TlsConn(p.https_port, "other.test", certs.ca_path) as c:  # other sites are not held back
        assert c.request(host="other.test").status == 200
    r = curl_fetch(f"http://{name}:{p.port}/x", *resolve(name, p.port))
    assert r.status == 503 and r.header("retry-after") and b"waiting for its certificate" in r.body
    # the ACME manager writes the files (notes/who.md layout): served without restart
    cert, key, serial = certs.leaf([name], "acme")
    d = p.workdir / "state" / "certs" / name
    d.mkdir(parents=True, exist_ok=True)
    write_atomic(d / "privkey.pem", key.read_bytes())
    write_atomic(d / "fullchain.pem", cert.read_bytes())

    def served() -> bool:
        try:
            with TlsConn(p.https_port, name, certs.ca_path) as c:
                return c.peer_cert().serial_number == serial and c.request(host=name).status == 200
        except (ssl.SSLError, ConnectionError, ClosedBeforeResponse):
            return False

    assert wait_until(served, timeout=5)
    r = curl_fetch(f"http://{name}:{p.port}/x", *resolve(name, p.port))
    assert r.status == 308 and r.header("location") == f"https://{name}:{p.https_port}/x"


def test_workers_share_one_local_ca_leaf(porch, upstream, tmp_path):
    """Two workers start together: one root, one leaf (made under the storage lock),
    served by both."""
    up = upstream()
    p = tls_porch(porch, site(up.url, 'tls = "internal"\n', host="localhost"), workers=2)
    def loaded() -> set[str]:
        return set(re.findall(r"\] (\d+): site localhost: certificate loaded", p.error_log_text()))

    assert wait_until(lambda: len(loaded()) == 2, timeout=10), p.error_log_text()  # each worker
    root = p.workdir / "state" / "ca" / "root.pem"
    serials = set()
    for _ in range(12):  # new connections, spread over the workers by the kernel
        with TlsConn(p.https_port, "localhost", root) as c:
            serials.add(c.peer_cert().serial_number)
            assert c.request(host="localhost").status == 200
    assert len(serials) == 1
    issued = x509.load_pem_x509_certificate((p.workdir / "state/certs/localhost/fullchain.pem").read_bytes())
    assert serials == {issued.serial_number}


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.0\r\n\r\n",  # no Host: 404 from no site, as openssl s_time asks
    b"GET /x HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n",  # unknown host
])
def test_an_answer_porch_closes_after_is_closed_at_once_over_tls(porch, upstream, certs, request_bytes):
    """TLS has no half close: a connection Porch answers itself and closes (the request
    whole) is closed at once, not after the lingering timeout, so a client reading until
    the close gets it with the answer (it waited 2.2 s before)."""
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"))
    ctx = client_context(certs.ca_path)
    with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="a.test") as s:
            s.sendall(request_bytes)
            start = time.monotonic()
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            took = time.monotonic() - start
    assert data.split(b" ", 2)[1] in (b"404", b"421", b"400"), data[:80]
    assert took < 1.0, f"closed {took:.2f} s after the request"
