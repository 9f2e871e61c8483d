"""The ACME HTTP-01 responder: `/.well-known/acme-challenge/<token>` (RFC 8555 8.3).

First in pipeline.ORDER: the CA's validator must reach it on plain HTTP, before any
redirect, authentication or rate limit.  Porch's own ACME manager (in the supervisor)
writes each key authorization to storage (tls/challenge.py `storage_key`); any
worker answers it here.

What happens to a token that is not Porch's depends on the site's `acme_challenge`:
- "porch" (default): 404;
- "upstream": the request goes on to the site's upstream as any other (Snikket gets
  its own certificates); Porch's own tokens are still answered here, as Caddy does,
  so both can hold certificates for the same names;
- { webroot = DIR }: the file DIR/.well-known/acme-challenge/<token> (certbot
  --webroot), resolved safely: the token is base64url (no "/" or "."), and a
  symlink that leads out of DIR is refused.
"""

from __future__ import annotations

import os
import re

from porch.config.model import Site, Webroot
from porch.http.model import Headers
from porch.pipeline import Context, Policy, Reply
from porch.storage import Storage, StorageError
from porch.tls.challenge import PREFIX, read_webroot, storage_key

# RFC 8555 8.1: tokens are base64url, at least 128 bits of entropy (22 characters);
# the length cap keeps a silly request from reaching the disk.
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{16,256}")
_READ = (b"GET", b"HEAD")


class AcmeChallenge(Policy):
    """Answers one site's challenge requests (built once per site at load time)."""

    name = "acme_challenge"
    __slots__ = ("storage", "upstream", "webroot")

    def __init__(self, storage: Storage, mode: str | Webroot = "porch") -> None:
        self.storage = storage
        self.upstream = mode == "upstream"
        self.webroot = os.path.realpath(mode.root) if isinstance(mode, Webroot) else None

    def request(self, ctx: Context) -> Reply | None:
        path = ctx.path
        if not path.startswith(PREFIX):
            return None
        token = path[len(PREFIX):]
        if ctx.method in _READ and _TOKEN.fullmatch(token):
            body = self.lookup(token.decode("ascii"), ctx)
            if body is not None:
                return Reply(200, body)
        if self.upstream:
            return None
        if ctx.method not in _READ:
            return Reply(405, headers=Headers.of([(b"Allow", b"GET, HEAD")]))
        return Reply(404)

    def lookup(self, token: str, ctx: Context) -> bytes | None:
        """The key authorization for `token`: Porch's own, else the webroot's file."""
        try:
            body = self.storage.get(storage_key(token))
        except StorageError as e:
            ctx.log_error(self.name, f"ACME challenge: {e}")
            body = None
        if body is None and self.webroot is not None:
            body = read_webroot(self.webroot, token)
        return body


def for_site(site: Site, storage: Storage) -> AcmeChallenge | None:
    """The responder `site` needs, or None when the path is nothing special there.

    Sites with ACME certificates, or an explicit `acme_challenge`, get one.  Sites
    with other TLS ("internal", files) get a pass-through one, so the challenge path
    is never redirected to https (another ACME client may be validating them).
    """
    from porch.tls.auto import wants_acme

    if wants_acme(site) or site.acme_challenge != "porch":
        return AcmeChallenge(storage, site.acme_challenge)
    if site.tls != "off":
        return AcmeChallenge(storage, "upstream")
    return None
