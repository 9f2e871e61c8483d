"""What is wrong with a site's certificate files, in words, before Porch serves them.

`check_pair(cert, key, chain)` reads the files as `porch run` will and returns the
problems (each for one key: "cert", "key", "chain", or "" for the pair) and the
warnings.  OpenSSL alone says `NO_CERTIFICATE_ASSIGNED`, `PEM lib (_ssl.c:3905)` or
`KEY_VALUES_MISMATCH`; this says which file holds what and which file to give instead.
The last step builds the very context the server builds (tls/contexts.py), so a pair
this accepts is a pair that loads.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

_CERT_PEM = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")
_KEY_PEM = re.compile(rb"-----BEGIN ((?:[A-Z]+ )*)PRIVATE KEY-----")
_CERTBOT = "certbot: cert = fullchain.pem, key = privkey.pem, from the same live/<name>/ directory"


@dataclass
class Findings:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (key, message)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def check_pair(cert: str, key: str, chain: str | None = None, now: dt.datetime | None = None) -> Findings:
    """See the module docstring; paths are absolute (the config reader made them so)."""
    found = Findings()
    cert_data, key_data = _read(cert, "cert", found), _read(key, "key", found)
    chain_data = _read(chain, "chain", found) if chain else b""
    if cert_data is None or key_data is None or chain_data is None:
        return found
    certs = _certificates(cert, cert_data, key_data, found)
    private = _private_key(key, key_data, cert_data, found)
    extra = _certificates(chain, chain_data, b"", found, kind="chain") if chain else []
    if certs is None or private is None or extra is None:
        return found
    if not _matches(cert, key, certs, private, found):
        return found
    _load_like_the_server(cert, key, chain, found)
    if not found.problems:
        _warn_chain(cert, certs, extra, found)
        _warn_expiry(cert, certs[0], now or dt.datetime.now(dt.timezone.utc), found)
    return found


def _read(path: str, kind: str, found: Findings) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(4 * 1024 * 1024)  # a chain is kilobytes
    except OSError as e:
        found.problems.append((kind, f'"{path}" cannot be read: {e.strerror}; give a file'
                               " the user running porch can read"))
        return None


def _certificates(path: str, data: bytes, key_data: bytes, found: Findings,
                  kind: str = "cert") -> list[x509.Certificate] | None:
    if _CERT_PEM.search(data) is None:
        if _KEY_PEM.search(data) and kind == "cert":
            swapped = " (cert and key look swapped)" if _CERT_PEM.search(key_data) else ""
            found.problems.append((kind, f'"{path}" holds a private key, not a certificate{swapped};'
                                   f" cert is the certificate chain, key the private key ({_CERTBOT})"))
        else:
            what = "the intermediate certificates" if kind == "chain" else "the site's certificate chain"
            found.problems.append((kind, f'"{path}" holds no certificate; expected {what} as PEM'
                                   " (-----BEGIN CERTIFICATE-----)"))
        return None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        found.problems.append((kind, f'"{path}" has a certificate that cannot be read ({e});'
                               " copy the file again from where it was issued"))
        return None


def _private_key(path: str, data: bytes, cert_data: bytes, found: Findings):
    match = _KEY_PEM.search(data)
    if match is None:
        if _CERT_PEM.search(data):
            found.problems.append(("key", f'"{path}" holds a certificate, not a private key;'
                                   f" key is the private key ({_CERTBOT})"))
        else:
            found.problems.append(("key", f'"{path}" holds no private key; expected a PEM file'
                                   " with -----BEGIN PRIVATE KEY-----"))
        return None
    if b"ENCRYPTED" in match.group(1) or b"Proc-Type: 4,ENCRYPTED" in data:
        found.problems.append(("key", f'"{path}" is an encrypted key; Porch reads keys without a'
                               " passphrase (decrypt it once: openssl pkey -in KEY -out KEY.plain)"))
        return None
    try:
        return serialization.load_pem_private_key(data[match.start():], password=None)
    except (ValueError, TypeError) as e:
        found.problems.append(("key", f'"{path}" has a private key that cannot be read ({e})'))
        return None


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _matches(cert: str, key: str, certs: list[x509.Certificate], private, found: Findings) -> bool:
    """The key belongs to the first certificate (the leaf: TLS sends it first)."""
    mine = _spki(private.public_key())
    keys = [_spki(c.public_key()) for c in certs]
    if keys[0] == mine:
        return True
    if mine in keys:
        found.problems.append(("cert", f'"{cert}" lists the certificates in the wrong order: the'
                               f" one for key \"{key}\" ({_subject(certs[keys.index(mine)])}) must come"
                               " first, then its intermediates"))
    else:
        found.problems.append(("key", f'"{key}" is not the private key of the certificate in'
                               f' "{cert}" ({_subject(certs[0])}); give the key made with that'
                               f" certificate ({_CERTBOT})"))
    return False


def _load_like_the_server(cert: str, key: str, chain: str | None, found: Findings) -> None:
    from porch.tls.contexts import TlsSettings, certificate_context

    try:
        certificate_context(TlsSettings(), cert, key, chain)
    except (ssl.SSLError, OSError) as e:
        why = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        found.problems.append(("", f'"{cert}" and "{key}" do not load together (OpenSSL: {why})'))


def _warn_chain(cert: str, certs: list[x509.Certificate], extra: list[x509.Certificate],
                found: Findings) -> None:
    leaf = certs[0]
    if len(certs) + len(extra) > 1 or leaf.issuer == leaf.subject:
        return
    found.warnings.append(("cert", f'"{cert}" holds only the site\'s certificate, issued by'
                           f" {leaf.issuer.rfc4514_string()}, and no intermediate: clients will fail"
                           ' with "unable to get local issuer certificate"; give the full chain'
                           ' (certbot: fullchain.pem, not cert.pem), or add chain = "chain.pem"'))


def _warn_expiry(cert: str, leaf: x509.Certificate, now: dt.datetime, found: Findings) -> None:
    if leaf.not_valid_after_utc <= now:
        found.warnings.append(("cert", f'"{cert}" expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC;'
                               " clients will refuse it: renew it (certbot renew)"))


def _subject(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    return "for " + ", ".join(names[:3]) if names else cert.subject.rfc4514_string()
