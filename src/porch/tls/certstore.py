"""Certificates as stored under state_dir: the contract with the serving side.

    certs/<site-name>/fullchain.pem   leaf + intermediates (0644)
    certs/<site-name>/privkey.pem     the key (0600)
    certs/<site-name>/meta.json       {"names", "source", "issuer", "not_after",
                                       "state", "last_error", ...}

<site-name> is Site.name (the first host).  Writers hold `storage.lock(lock_key(name))`
while they issue.  A new certificate is written key first, then fullchain, then
meta.json last: a reader that sees a new meta.json sees the new pair.  "state" is
"valid", "renewing" (a renewal is under way; the files are the old, still good
ones) or "failing" (the last attempt failed: `last_error`; any files are the last
good ones).  Meta may exist without files: the first issuance is failing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field, replace

from cryptography import x509

from porch.storage import Storage, StorageError


def cert_dir(name: str) -> str:
    return f"certs/{name}"


def lock_key(name: str) -> str:
    """The lock held while a certificate for site `name` is being issued."""
    return f"certs/{name}"


@dataclass(frozen=True)
class Meta:
    names: tuple[str, ...]
    source: str = "acme"
    issuer: str | None = None  # the issuing CA's common name (organization if none)
    not_after: str | None = None  # ISO-8601 UTC
    state: str = "valid"
    last_error: str | None = None
    # beyond the contract: for renewal and `porch certs`
    not_before: str | None = None
    ca: str | None = None  # ACME directory URL that issued it
    deploy_error: str | None = None  # the last deploy hook / bundle failure
    attempts: int = 0  # failed attempts since the last success
    next_attempt: str | None = None  # ISO-8601 UTC, when failing

    def to_json(self) -> bytes:
        data = asdict(self)
        data["names"] = list(self.names)
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Meta:
        data = json.loads(raw)
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in data.items() if k in known}
        data["names"] = tuple(data.get("names", ()))
        return cls(**data)

    def with_(self, **changes) -> Meta:
        return replace(self, **changes)


@dataclass(frozen=True)
class Stored:
    """What storage holds for one site name."""

    name: str
    meta: Meta | None
    fullchain: bytes | None = field(default=None, repr=False)

    @property
    def cert(self) -> x509.Certificate | None:
        if not self.fullchain:
            return None
        try:
            return x509.load_pem_x509_certificate(self.fullchain)
        except ValueError:
            return None


def read(storage: Storage, name: str) -> Stored:
    base = cert_dir(name)
    raw = storage.get(f"{base}/meta.json")
    meta = None
    if raw is not None:
        try:
            meta = Meta.from_json(raw)
        except (ValueError, TypeError):
            meta = None  # damaged: treated as absent, rewritten on the next issuance
    return Stored(name, meta, storage.get(f"{base}/fullchain.pem"))


def write_meta(storage: Storage, name: str, meta: Meta) -> None:
    storage.put(f"{cert_dir(name)}/meta.json", meta.to_json(), 0o644)


def write_certificate(storage: Storage, name: str, fullchain: bytes, key: bytes, meta: Meta) -> Meta:
    """Store a new certificate and its meta (state valid); returns the meta written."""
    cert = x509.load_pem_x509_certificate(fullchain)
    meta = meta.with_(
        issuer=issuer_name(cert),
        not_before=iso(cert.not_valid_before_utc),
        not_after=iso(cert.not_valid_after_utc),
        state="valid",
        last_error=None,
        attempts=0,
        next_attempt=None,
    )
    base = cert_dir(name)
    storage.put(f"{base}/privkey.pem", key, 0o600)
    storage.put(f"{base}/fullchain.pem", fullchain, 0o644)
    write_meta(storage, name, meta)
    return meta


def names_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def issuer_name(cert: x509.Certificate) -> str:
    for oid in (x509.NameOID.COMMON_NAME, x509.NameOID.ORGANIZATION_NAME):
        attrs = cert.issuer.get_attributes_for_oid(oid)
        if attrs:
            return str(attrs[0].value)
    return cert.issuer.rfc4514_string()


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def list_names(storage: Storage) -> list[str]:
    """Site names that have something stored."""
    try:
        return [key.split("/", 1)[1] for key in storage.list("certs")]
    except StorageError:
        return []
