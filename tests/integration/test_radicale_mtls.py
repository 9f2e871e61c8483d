"""examples/radicale-mtls.toml against a real Radicale (from PyPI) set up as its guide's
"Secure connection between Radicale and the reverse proxy" says: certificates made with
the guide's openssl commands, Radicale with ssl = True and certificate_authority set to
Porch's client certificate."""

from __future__ import annotations

import re
import subprocess

import pytest

from .helpers import PORCH_BIN, PYTHON, REPO, Porch, RawConn, free_port, wait_for_port, wait_until

EXAMPLE = REPO / "examples" / "radicale-mtls.toml"


def openssl_req_x509(directory, stem: str, subject: str) -> None:
    # The guide's command, with -subj instead of its prompts; rsa:2048 instead of its
    # rsa:4096 only to keep the test fast.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", f"{stem}_key.pem",
                    "-out", f"{stem}_cert.pem", "-nodes", "-days", "9999", "-subj", subject],
                   cwd=directory, check=True, capture_output=True)


@pytest.fixture
def radicale(procs, tmp_path):
    """Radicale on a free port serving TLS, requiring the client certificate; the files
    are in tmp_path/porch/radicale/, where the example looks for them."""
    files = tmp_path / "porch" / "radicale"
    files.mkdir(parents=True)
    openssl_req_x509(files, "server", "/CN=localhost")
    openssl_req_x509(files, "client", "/CN=porch")
    port = free_port()
    conf = tmp_path / "radicale.conf"
    conf.write_text(f"""
[server]
hosts = 127.0.0.1:{port}
ssl = True
certificate = {files / "server_cert.pem"}
key = {files / "server_key.pem"}
certificate_authority = {files / "client_cert.pem"}
[auth]
type = none
[storage]
filesystem_folder = {tmp_path / "collections"}
""")
    server = procs.start([PYTHON, "-m", "radicale", "--config", str(conf)], cwd=tmp_path, name="radicale")
    wait_for_port(port, server, what="radicale")
    return port, server


def example_sites(port: int, *, drop: tuple[str, ...] = ()) -> str:
    """The example's sites, with Radicale's port and without the [porch] table (the test's)."""
    text = EXAMPLE.read_text().split("[[site]]", 1)[1]
    text = "[[site]]" + text.replace("localhost:5232", f"localhost:{port}")
    for key in drop:  # e.g. ("cert", "key"): the same setup without the client certificate
        text = re.sub(rf'{key} = "[^"]*", ', "", text)
    return text


PROPFIND = (b"PROPFIND /radicale/ HTTP/1.1\r\nHost: dav.example.org\r\nDepth: 0\r\n"
            b"Content-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s")
BODY = (b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>')


def test_check_reads_the_example_and_its_files(radicale, tmp_path):
    path = tmp_path / "porch" / "porch.toml"
    path.write_text(EXAMPLE.read_text())
    r = subprocess.run([str(PORCH_BIN), "check", "-c", str(path)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    files = tmp_path / "porch" / "radicale"
    assert (f"upstream tls: verify with ca {files}/server_cert.pem; client cert {files}/client_cert.pem"
            f" key {files}/client_key.pem; sni localhost") in r.stdout


def test_porch_reaches_radicale_over_mutual_tls(radicale, procs, tmp_path):
    port, server = radicale
    p = Porch(procs, tmp_path / "porch", example_sites(port))
    with RawConn(p.port) as c:
        c.send(PROPFIND % (len(BODY), BODY))
        r = c.read_response()
    assert r.status == 207, (r.status, r.body[:300], p.error_log_text(), server.output())
    assert b"<href>/radicale/</href>" in r.body  # X-Script-Name reached Radicale
    assert wait_until(lambda: re.search(r"PROPFIND request for '/' .* TLSv1\.[23]", server.output())), \
        server.output()


def test_without_the_client_certificate_radicale_refuses_and_porch_answers_502(radicale, procs, tmp_path):
    port, server = radicale
    p = Porch(procs, tmp_path / "porch", example_sites(port, drop=("cert", "key")))
    with RawConn(p.port) as c:
        c.send(PROPFIND % (len(BODY), BODY))
        assert c.read_response().status == 502
    assert "certificate required" in p.error_log_text(wait_for="certificate required")
    # Radicale's own log says why (it may write the line a moment after answering).
    assert wait_until(lambda: "PEER_DID_NOT_RETURN_A_CERTIFICATE" in server.output()), server.output()
