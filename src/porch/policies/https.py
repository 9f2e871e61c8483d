"""The move to HTTPS: plain HTTP on a TLS site is redirected to https://.

On plain HTTP, in this order (after the ACME responder, policies/acme_challenge.py,
which runs first: pipeline.ORDER):

1. `/.well-known/acme-challenge/` is never redirected: ACME HTTP-01 validation
   requests arrive on port 80 (RFC 8555 section 8.3); tokens that are not Porch's go
   through normal routing (acme_challenge = "upstream", other ACME clients);
2. while an "auto" site waits for its first certificate, 503 with Retry-After: a
   redirect would lead the browser into a refused handshake, this says why;
3. otherwise a redirect to the same host, path and query over https.  308, as Caddy:
   unlike 301 it keeps the method and body (RFC 9110 section 15.4.9), so a POST to
   http:// is not silently turned into a GET.

A site with `redirect_http = false` has no such policy.  HTTPS requests pass untouched;
HSTS is policies/hsts.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from porch.http.model import Headers
from porch.pipeline import Context, Policy, Reply
from porch.tls.challenge import PREFIX as ACME_CHALLENGE

if TYPE_CHECKING:
    from porch.tls.contexts import CertSlot

_HTTPS = b"https"
# How long a client should wait before asking again for a site still waiting for its
# certificate: an HTTP-01 issuance takes seconds to a minute.
WAITING_RETRY_AFTER = 30


class HttpsRedirect(Policy):
    name = "https"
    __slots__ = ("slot", "port")

    def __init__(self, slot: CertSlot, https_port: int) -> None:
        self.slot = slot
        self.port = b"" if https_port == 443 else b":%d" % https_port

    def request(self, ctx: Context) -> Reply | None:
        if ctx.scheme == _HTTPS or ctx.path.startswith(ACME_CHALLENGE):
            return None
        if self.slot.context is None:
            cause = f"site {self.slot.site} is waiting for its certificate; HTTPS is not available yet"
            return Reply(503, f"503 Service Unavailable\n{cause}\n".encode(),
                         Headers.of([(b"Retry-After", b"%d" % WAITING_RETRY_AFTER)]), cause=cause)
        host = ctx.host.encode()
        if b":" in host:
            host = b"[" + host + b"]"
        location = b"https://%s%s%s%s" % (host, self.port, ctx.path, ctx.query)
        return Reply(308, headers=Headers.of([(b"Location", location)]))
