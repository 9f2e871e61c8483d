"""The TLS-ALPN-01 responder (RFC 8737): the serving side, in every worker.

The CA validates a name by a TLS handshake on port 443 with SNI = the name and ALPN
offering only `acme-tls/1`; the server must negotiate acme-tls/1 and present a
self-signed certificate for the name that carries the acmeIdentifier extension
(the SHA-256 of the key authorization).  Porch's ACME manager (in the supervisor,
tls/acme_alpn.py) writes that certificate and its key, as one PEM, to storage key
`acme/tls-alpn-01/<name>` while the CA validates; any worker answers from it, as
HTTP-01 key authorizations are answered from `acme/http-01/<token>`.

Python's ssl module shows neither the ALPN list in the SNI callback nor a
certificate callback after ALPN, so the choice is made before OpenSSL sees the
hello: the HTTPS listener's first protocol (server/mux.py) reads the ClientHello
and, when it offers acme-tls/1 for a name with a pending challenge, completes the
handshake with `context(name)`, then closes (RFC 8737 section 3: no data follows).
"""

from __future__ import annotations

import os
import ssl
import tempfile

from porch.storage import Storage, StorageError

KEY_PREFIX = "acme/tls-alpn-01/"
ACME_TLS = "acme-tls/1"  # RFC 8737 section 6.2: the ALPN protocol ID


def storage_key(name: str) -> str:
    """Where the validation certificate and key for `name` (lowercase, ASCII) live."""
    return KEY_PREFIX + name


class AlpnResponder:
    """Validation contexts by server name, loaded from storage when a CA asks.

    A context is cached with the storage stamp it was built from: a CA validating
    from several places (Let's Encrypt's multi-perspective validation) costs one
    stat per handshake, and a new challenge for the same name replaces it."""

    __slots__ = ("storage", "cache")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.cache: dict[str, tuple[float, ssl.SSLContext]] = {}

    def context(self, name: str | None, log) -> ssl.SSLContext | None:
        """The validation context for `name`, or None when no challenge is pending
        (the handshake then goes to Porch's own TLS, which does not speak acme-tls/1,
        so the CA's validation fails as it should).  `log`: the ErrorLog."""
        if not name or "/" in name or name.startswith("."):
            return None
        key = storage_key(name)
        try:
            stamp = self.storage.modified(key)
            if stamp is None:
                self.cache.pop(name, None)
                return None
            cached = self.cache.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            pem = self.storage.get(key)
        except StorageError as e:
            log.error(f"TLS-ALPN-01 challenge: {e}", sni=name)
            return None
        if pem is None:
            return None
        try:
            ctx = validation_context(pem)
        except (ssl.SSLError, OSError) as e:
            log.error(f"TLS-ALPN-01 challenge: the validation certificate does not load: {e}", sni=name)
            return None
        if len(self.cache) > 100:  # names come from the config, but stay bounded
            self.cache.clear()
        self.cache[name] = (stamp, ctx)
        return ctx


def validation_context(pem: bytes) -> ssl.SSLContext:
    """A server context serving the certificate and key in `pem`, negotiating only
    acme-tls/1 over TLS 1.2 or later (RFC 8737 section 4)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ACME_TLS])
    # load_cert_chain reads files only; the file lives for the call, 0600 in a
    # private directory (the key is a throwaway, good for one validation).
    with tempfile.TemporaryDirectory(prefix="porch-alpn-") as tmp:
        path = os.path.join(tmp, "validation.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
        ctx.load_cert_chain(path)
    return ctx
