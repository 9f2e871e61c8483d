"""pebble (Let's Encrypt's test ACME server, Debian package `pebble`) for the tests.

`Pebble(...)` starts, on 127.0.0.1 only:
- pebble-challtestsrv as pebble's DNS: every name resolves to 127.0.0.1 (A; no AAAA)
  unless a test says otherwise through its management API (`add_a`); its own
  HTTP-01 / TLS-ALPN-01 listeners are switched off (empty values);
- pebble, whose validation authority connects to Porch's http_port for HTTP-01
  (`httpPort`) and, when a test says so, to Porch's https_port for TLS-ALPN-01
  (`tlsPort`), with PEBBLE_VA_NOSLEEP=1 so validation starts at once.
Pebble's HTTPS directory needs a certificate: the package ships none, so one is made
here (a throwaway root and a leaf for 127.0.0.1/localhost); `root_pem` is what Porch
gets as acme_ca_root.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .helpers import Registry, free_port, wait_for_port


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(root.pem, cert.pem, key.pem): a root CA and a leaf for localhost/127.0.0.1 it signed."""
    now = dt.datetime.now(dt.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "porch test pebble root")])
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                       critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (directory / "pebble-root.pem", directory / "pebble-cert.pem", directory / "pebble-key.pem")
    paths[0].write_bytes(root.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Pebble:
    """A running pebble + pebble-challtestsrv pair; see the module docstring."""

    def __init__(self, registry: Registry, workdir: Path, http_port: int,
                 validity: int | None = None, tls_port: int | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.root_pem, cert, key = make_tls_files(workdir)
        self.dns_port = free_port()
        self.dns_mgmt_port = free_port()
        self.port = free_port()
        self.mgmt_port = free_port()
        self.challtestsrv = registry.start([
            "pebble-challtestsrv", "-dns01", f"127.0.0.1:{self.dns_port}",
            "-management", f"127.0.0.1:{self.dns_mgmt_port}", "-defaultIPv4", "127.0.0.1",
            "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "",
        ], cwd=workdir, name="challtestsrv")
        wait_for_port(self.dns_mgmt_port, self.challtestsrv)
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": http_port, "tlsPort": tls_port or free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        if validity is not None:  # seconds: short-lived certificates for renewal tests
            config["pebble"]["certificateValidityPeriod"] = validity
        (workdir / "pebble-config.json").write_text(json.dumps(config))
        # env(1) execs pebble in place: the pid is pebble's.  No sleeps before validation,
        # no rejected nonces, no reused authorizations: every issuance validates anew.
        self.pebble = registry.start(
            ["env", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0",
             "pebble", "-config", str(workdir / "pebble-config.json"),
             "-dnsserver", f"127.0.0.1:{self.dns_port}"], cwd=workdir, name="pebble")
        wait_for_port(self.port, self.pebble)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def add_a(self, host: str, address: str) -> None:
        """Make `host` resolve to `address` for pebble (challtestsrv management API)."""
        self._dns_post("/clear-a", {"host": host})
        self._dns_post("/add-a", {"host": host, "addresses": [address]})

    def _dns_post(self, path: str, body: dict) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.dns_mgmt_port, timeout=5)
        try:
            conn.request("POST", path, body=json.dumps(body))
            assert conn.getresponse().status == 200
        finally:
            conn.close()

    def issuing_root(self) -> str:
        """The root of the certificates pebble issues (PEM), new at each pebble start."""
        ctx = ssl.create_default_context(cafile=str(self.root_pem))
        conn = http.client.HTTPSConnection("127.0.0.1", self.mgmt_port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/roots/0")
            return conn.getresponse().read().decode()
        finally:
            conn.close()
