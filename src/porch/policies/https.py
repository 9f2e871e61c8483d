"""The request phase of a site with TLS: plain HTTP goes to https://, HTTPS gets HSTS.

One `HttpsPhase` per TLS site, compiled at load time and called from
`Exchange.route_request` once the site and the clean path are known, right after
Porch's ACME responder (porch.tls.challenge) had its turn; sites without TLS have
none and pay nothing.  On plain HTTP, in this order (the contract in notes/who.md):

1. `/.well-known/acme-challenge/` is never redirected: ACME HTTP-01 validation
   requests arrive on port 80 (RFC 8555 section 8.3); tokens that are not Porch's go
   through normal routing (acme_challenge = "upstream", other ACME clients);
2. while an "auto" site waits for its first certificate, 503 with Retry-After: a
   redirect would lead the browser into a refused handshake, this says why;
3. otherwise a redirect to the same host, path and query over https.  308, as Caddy:
   unlike 301 it keeps the method and body (RFC 9110 section 15.4.9), so a POST to
   http:// is not silently turned into a GET.  `redirect_http = false` skips 2 and 3.

On HTTPS, the site's Strict-Transport-Security line (pre-encoded) is handed to the
exchange, which adds it to every response, Porch's own errors included (RFC 6797
section 7.2: only over secure transport, which is why plain HTTP never gets it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from porch.errors import ProxyError
from porch.tls.challenge import PREFIX as ACME_CHALLENGE

if TYPE_CHECKING:
    from porch.server.proxy import Exchange
    from porch.tls.contexts import CertSlot

_HTTPS = b"https"
# How long a client should wait before asking again for a site still waiting for its
# certificate: an HTTP-01 issuance takes seconds to a minute.
WAITING_RETRY_AFTER = 30


class HttpsPhase:
    __slots__ = ("slot", "redirect", "port", "hsts", "site")

    def __init__(self, slot: CertSlot, https_port: int, redirect: bool, hsts: str | None) -> None:
        self.slot = slot
        self.site = slot.site
        self.redirect = redirect
        self.port = b"" if https_port == 443 else b":%d" % https_port
        self.hsts = b"Strict-Transport-Security: %s\r\n" % hsts.encode() if hsts else b""

    def __call__(self, ex: Exchange, path: bytes, query: bytes) -> bool:
        """True when the request has been answered here (ex.answer was called).
        `query` is "" or starts with "?"."""
        if ex.client.scheme == _HTTPS:
            if self.hsts:
                ex.hsts = self.hsts
            return False
        if path.startswith(ACME_CHALLENGE):
            return False
        if not self.redirect:
            return False
        if self.slot.context is None:
            cause = f"site {self.site} is waiting for its certificate; HTTPS is not available yet"
            ex.answer(503, cause, body=f"503 Service Unavailable\n{cause}\n".encode(),
                      source_error=ProxyError(503, "internal", cause),
                      extra=b"Retry-After: %d\r\n" % WAITING_RETRY_AFTER)
            return True
        host = ex.host.encode()
        if b":" in host:
            host = b"[" + host + b"]"
        ex.answer(308, "", extra=b"Location: https://%s%s%s%s\r\n" % (host, self.port, path, query))
        return True
