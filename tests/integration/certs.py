"""Certificates for the TLS tests, made by the test with `cryptography`; nothing is committed.

    ca = TestCA(tmp_path, "Test Root CA")           # ca.cert: its PEM file
    server = ca.issue("server", ["localhost", "127.0.0.1"])
    client = ca.issue("client", ["porch client"], client=True)
    lone = self_signed(tmp_path, "snikket", ["localhost"])   # like `openssl req -x509`

Keys are ECDSA P-256 (fast to make); every certificate carries the extensions OpenSSL's
strict checks ask for (SKI, AKI, key usage, basic constraints).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}_cert.pem", directory / f"{stem}_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return Pair(cert_path, key_path)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int = 30) -> x509.CertificateBuilder:
    """Valid from 5 minutes ago for `days` days; a negative `days`: expired that long ago."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(minutes=5) if days > 0 else now + datetime.timedelta(days=days - 30)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                         crl_sign=True, encipher_only=False, decipher_only=False)


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                         crl_sign=False, encipher_only=False, decipher_only=False)


class TestCA:
    """A root CA written to `directory` as `<stem>_cert.pem`; issues leaf certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, common_name: str = "Porch Test CA", stem: str = "ca") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name)
        self.certificate = (_builder(self.name, self.name, self.key.public_key(), days=365)
                            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                            .add_extension(_ca_usage(), critical=True)
                            .sign(self.key, hashes.SHA256()))
        self.pair = _write(directory, stem, self.certificate, self.key)
        self.cert = self.pair.cert

    def issue(self, stem: str, names: list[str], *, client: bool = False, days: int = 30) -> Pair:
        """A leaf for `names` (DNS names or IP addresses; the first is also the CN),
        valid for `days` (negative: expired)."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (_builder(_name(names[0]), self.name, key.public_key(), days)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_leaf_usage(), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                               critical=False)
                .add_extension(_san(names), critical=False)
                .sign(self.key, hashes.SHA256()))
        return _write(self.directory, stem, cert, key)


def self_signed(directory: Path, stem: str, names: list[str]) -> Pair:
    """A self-signed certificate for `names`, its own CA (what `openssl req -x509` makes,
    as in Radicale's and Snikket's guides)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(names[0])
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_san(names), critical=False)
            .sign(key, hashes.SHA256()))
    return _write(directory, stem, cert, key)
