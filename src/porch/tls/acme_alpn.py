"""TLS-ALPN-01 (RFC 8737) for the ACME client: the challenge type and its certificate.

The `acme` library dropped its TLSALPN01 class (certbot 2.x deprecated it, later
releases removed it); without a registered class, an authorization's tls-alpn-01
challenge parses as UnrecognizedChallenge.  `TLSALPN01` is registered here through
the library's own extension point (`Challenge.register`), as its HTTP01 is: the
key authorization and the (empty, RFC 8555 section 7.5.1) response work the same way.

`validation_pem(name, key_authorization)` makes what the responder serves
(tls/alpn_challenge.py): a self-signed certificate whose only subjectAltName is the
name, with the critical acmeIdentifier extension holding SHA-256 of the key
authorization (RFC 8737 section 3), and its fresh P-256 key, as one PEM.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import josepy as jose
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# RFC 8737 section 6.1: id-pe-acmeIdentifier
ID_PE_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
TYPE = "tls-alpn-01"


def _register() -> tuple[type, type]:
    """The challenge and response classes, registered once (a later acme release
    that brings its own keeps its own)."""
    known = challenges.Challenge.TYPES.get(TYPE)
    if known is not None:
        return known, known.response_cls

    @challenges.ChallengeResponse.register
    class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
        """The answer to a tls-alpn-01 challenge: `{}` on the wire."""
        typ = TYPE

    @challenges.Challenge.register
    class TLSALPN01(challenges.KeyAuthorizationChallenge):
        """A tls-alpn-01 challenge: `validation()` is the key authorization; the
        certificate is made by validation_pem()."""
        response_cls = TLSALPN01Response
        typ = TYPE

        def validation(self, account_key: jose.JWK, **unused: Any) -> str:
            return self.key_authorization(account_key)

    return TLSALPN01, TLSALPN01Response


TLSALPN01, TLSALPN01Response = _register()


def acme_identifier(key_authorization: str) -> x509.UnrecognizedExtension:
    """The extension's value: DER `OCTET STRING (SIZE (32))` of SHA-256(key authorization)."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest)


def validation_pem(name: str, key_authorization: str) -> bytes:
    """Certificate then key (PKCS#8), PEM, for answering `name`'s challenge."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        # a day either way: the validator's clock is not ours
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(acme_identifier(key_authorization), critical=True)  # RFC 8737 section 3: MUST be critical
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return cert.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
