"""Porch's own certificate authority, for `tls = "internal"` sites (local names).

A root (10 years) signs an intermediate (30 days, replaced when a third of its life
is left), which signs short-lived leaf certificates (24 hours, renewed when a third
is left), as Caddy's internal issuer and smallstep do: only the root has to be
trusted (`porch trust` prints it), and a leaked leaf or intermediate key is soon
worthless.  All keys are ECDSA P-256.

Everything lives in the storage under `ca/` (keys 0600) and is created under the
storage lock "ca", so several workers starting together make one root, not several.
Leaves are written by the caller (tls/sources.py) in the `certs/<site>/` layout shared
with the ACME manager.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from porch.storage import Storage

ROOT_LIFETIME = dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = dt.timedelta(days=30)
LEAF_LIFETIME = dt.timedelta(hours=24)
# Backdating covers clocks a little behind ours (Caddy and Let's Encrypt: 1 hour).
BACKDATE = dt.timedelta(hours=1)

ROOT_CERT, ROOT_KEY = "ca/root.pem", "ca/root.key"
INTERMEDIATE_CERT, INTERMEDIATE_KEY = "ca/intermediate.pem", "ca/intermediate.key"
ORGANIZATION = "Porch local CA"


def renew_at(cert: x509.Certificate) -> dt.datetime:
    """When a third of the certificate's lifetime is left (Let's Encrypt's advice)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return end - (end - start) / 3


@dataclass(frozen=True)
class Leaf:
    chain_pem: bytes  # leaf then intermediate
    key_pem: bytes
    cert: x509.Certificate


class LocalCA:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def root_pem(self) -> bytes:
        """The root certificate (PEM), created on first use."""
        self._signer(_now())
        pem = self.storage.get(ROOT_CERT)
        assert pem is not None
        return pem

    def issue(self, names: tuple[str, ...], now: dt.datetime | None = None) -> Leaf:
        """A fresh leaf for `names` (DNS names, "*.x" wildcards, IP addresses)."""
        now = now or _now()
        inter_cert, inter_key = self._signer(now)
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [_san(name) for name in names]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # RFC 5280 4.2.1.6: the names are in the SAN, critical
            .issuer_name(inter_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + LEAF_LIFETIME, inter_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(_aki(inter_cert), critical=False)
        )
        cert = builder.sign(inter_key, hashes.SHA256())
        chain = cert.public_bytes(serialization.Encoding.PEM) + inter_cert.public_bytes(serialization.Encoding.PEM)
        return Leaf(chain, _key_pem(key), cert)

    # -- root and intermediate -------------------------------------------------

    def _signer(self, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The intermediate and its key, creating the root and/or a new intermediate
        when missing or due (under the storage lock "ca")."""
        with self.storage.lock("ca"):
            root = self._load(ROOT_CERT, ROOT_KEY)
            if root is None or now >= root[0].not_valid_after_utc - INTERMEDIATE_LIFETIME:
                root = self._make_root(now)
            inter = self._load(INTERMEDIATE_CERT, INTERMEDIATE_KEY)
            if inter is None or now >= renew_at(inter[0]) or inter[0].issuer != root[0].subject:
                inter = self._make_intermediate(now, *root)
            return inter

    def _load(self, cert_key: str, key_key: str):
        cert_pem, key_pem = self.storage.get(cert_key), self.storage.get(key_key)
        if cert_pem is None or key_pem is None:
            return None
        key = serialization.load_pem_private_key(key_pem, password=None)
        return x509.load_pem_x509_certificate(cert_pem), key

    def _make_root(self, now: dt.datetime):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANIZATION} {now:%Y-%m-%d} ECC root"),
        ])
        cert = (
            _ca_builder(name, name, key.public_key(), now, ROOT_LIFETIME, path_length=1)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self._store(ROOT_CERT, ROOT_KEY, cert, key)
        return cert, key

    def _make_intermediate(self, now: dt.datetime, root: x509.Certificate, root_key):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANIZATION} {now:%Y-%m-%d %H:%M} ECC intermediate"),
        ])
        lifetime = min(INTERMEDIATE_LIFETIME, root.not_valid_after_utc - now)
        cert = (
            _ca_builder(name, root.subject, key.public_key(), now, lifetime, path_length=0)
            .add_extension(_aki(root), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        self._store(INTERMEDIATE_CERT, INTERMEDIATE_KEY, cert, key)
        return cert, key

    def _store(self, cert_key: str, key_key: str, cert: x509.Certificate, key) -> None:
        self.storage.put(key_key, _key_pem(key), mode=0o600)
        self.storage.put(cert_key, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )


def _ca_builder(subject, issuer, public_key, now, lifetime, *, path_length: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
