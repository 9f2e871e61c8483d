"""ACME Renewal Information (RFC 9773) against a small HTTPS peer that offers it.

Debian's pebble (2.4) has no renewalInfo resource, so this peer serves the two
things the renewal decision reads: the directory (with "renewalInfo") and the
renewal information of a certificate, with Retry-After.  The CertManager, its ACME
client and the acme library run for real over TLS; the account is already in
storage, as after a first issuance.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from porch.config.toml import loads
from porch.observability.errorlog import ErrorLog
from porch.storage import FileStorage
from porch.tls import certstore
from porch.tls.acme import ari_cert_id, directory_slug, new_key
from porch.tls.manager import CertManager

from .pebble import make_tls_files

NOW = dt.datetime.now(dt.timezone.utc)


class AriPeer:
    """GET /dir and GET /ari/<certid> over HTTPS on 127.0.0.1; `window` is what it says."""

    def __init__(self, tmp_path) -> None:
        self.root, cert, key = make_tls_files(tmp_path)
        self.window: tuple[dt.datetime, dt.datetime] = (NOW, NOW)
        self.asked: list[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                base = f"https://127.0.0.1:{peer.port}"
                if self.path == "/dir":
                    body = {"newNonce": f"{base}/nonce", "newAccount": f"{base}/acct",
                            "newOrder": f"{base}/order", "renewalInfo": f"{base}/ari"}
                elif self.path.startswith("/ari/"):
                    peer.asked.append(self.path[len("/ari/"):])
                    start, end = peer.window
                    body = {"suggestedWindow": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")}}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Retry-After", "21600")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer(tmp_path):
    p = AriPeer(tmp_path)
    yield p
    p.close()


def stored_certificate(storage: FileStorage, name: str) -> x509.Certificate:
    """A 90-day certificate for `name` issued a day ago, with an authority key id, stored
    as the ACME manager would have."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ARI test CA")]))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=89))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certstore.write_certificate(storage, name, cert.public_bytes(Encoding.PEM), b"key",
                                certstore.Meta(names=(name,)))
    return cert


def manager_for(peer: AriPeer, tmp_path) -> tuple[CertManager, FileStorage]:
    directory = f"https://127.0.0.1:{peer.port}/dir"
    config = loads(f'[porch]\nstate_dir = "{tmp_path}/state"\nacme_ca = "{directory}"\n'
                   f'acme_ca_root = "{peer.root}"\n'
                   '[[site]]\nhosts = ["a.example.com"]\nproxy = "http://127.0.0.1:1"\ntls = "auto"\n')
    storage = FileStorage(config.porch.state_dir)
    base = f"acme/accounts/{directory_slug(directory)}"
    storage.put(f"{base}/key.pem", new_key()[1])  # registered already, as after a first issuance
    storage.put(f"{base}/account.json", json.dumps({"body": {}, "uri": f"{directory}/acct/1"}).encode())
    return CertManager(config, storage, ErrorLog(str(tmp_path / "error.log"))), storage


def test_ari_window_that_has_started_makes_the_renewal_due_now(peer, tmp_path):
    manager, storage = manager_for(peer, tmp_path)
    cert = stored_certificate(storage, "a.example.com")
    peer.window = (NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=1))  # e.g. a revocation
    due = manager.due(certstore.read(storage, "a.example.com"), manager.sites[0])
    assert due <= dt.datetime.now(dt.timezone.utc)  # not day 60 of 90: now
    assert peer.asked == [ari_cert_id(cert)]


def test_ari_window_in_the_future_picks_a_moment_inside_it_and_is_cached(peer, tmp_path):
    manager, storage = manager_for(peer, tmp_path)
    stored_certificate(storage, "a.example.com")
    start, end = NOW + dt.timedelta(days=10), NOW + dt.timedelta(days=11)
    peer.window = (start, end)
    site = manager.sites[0]
    due = manager.due(certstore.read(storage, "a.example.com"), site)
    assert start <= due <= end  # earlier than the lifetime rule (day 60)
    again = manager.due(certstore.read(storage, "a.example.com"), site)
    assert again == due and len(peer.asked) == 1  # Retry-After: 6 h, not asked again


def test_a_third_of_the_lifetime_wins_over_a_later_ari_window(peer, tmp_path):
    manager, storage = manager_for(peer, tmp_path)
    cert = stored_certificate(storage, "a.example.com")
    peer.window = (NOW + dt.timedelta(days=80), NOW + dt.timedelta(days=81))  # later than day 60
    due = manager.due(certstore.read(storage, "a.example.com"), manager.sites[0])
    assert due == cert.not_valid_before_utc + dt.timedelta(days=60)
