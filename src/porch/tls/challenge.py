"""The HTTP-01 responder: `/.well-known/acme-challenge/<token>` (RFC 8555 8.3).

Called by the request phase (server/proxy.py `route_request`) for sites that have
one, before any redirect, authentication or rate limit: the CA's validator must
reach it on plain HTTP.  Porch's own ACME manager (in the supervisor) writes each
key authorization to storage key `acme/http-01/<token>`; any worker answers it.

What happens to a token that is not Porch's depends on the site's `acme_challenge`:
- "porch" (default): 404;
- "upstream": the request goes to the site's upstream as any other (Snikket gets
  its own certificates); Porch's own tokens are still answered here, as Caddy does,
  so both can hold certificates for the same names;
- { webroot = DIR }: the file DIR/.well-known/acme-challenge/<token> (certbot
  --webroot), resolved safely: the token is base64url (no "/" or "."), and a
  symlink that leads out of DIR is refused.
"""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING

from porch.config.model import Webroot
from porch.storage import Storage, StorageError

if TYPE_CHECKING:
    from porch.server.proxy import Exchange

PREFIX = b"/.well-known/acme-challenge/"
KEY_PREFIX = "acme/http-01/"
# RFC 8555 8.1: tokens are base64url, at least 128 bits of entropy (22 characters);
# the length cap keeps a silly request from reaching the disk.
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{16,256}")
_MAX_FILE = 64 * 1024  # a key authorization is ~90 bytes


def storage_key(token: str) -> str:
    """Where the ACME manager puts the key authorization for `token`."""
    return KEY_PREFIX + token


class Responder:
    """Answers one site's challenge requests (built once per site at load time)."""

    __slots__ = ("storage", "upstream", "webroot")

    def __init__(self, storage: Storage, mode: str | Webroot = "porch") -> None:
        self.storage = storage
        self.upstream = mode == "upstream"
        self.webroot = os.path.realpath(mode.root) if isinstance(mode, Webroot) else None

    def respond(self, ex: Exchange, path: bytes) -> bool:
        """Answer `ex` (a request for `path`, which starts with PREFIX) and return True,
        or return False to let the request be routed as usual ("upstream" mode)."""
        token = path[len(PREFIX):]
        if ex.method in (b"GET", b"HEAD") and _TOKEN.fullmatch(token):
            body = self.lookup(token.decode("ascii"), ex)
            if body is not None:
                ex.answer(200, "", body=body)
                return True
        if self.upstream:
            return False
        if ex.method not in (b"GET", b"HEAD"):
            ex.answer(405, "", extra=b"Allow: GET, HEAD\r\n")
        else:
            ex.answer(404, "")
        return True

    def lookup(self, token: str, ex: Exchange) -> bytes | None:
        """The key authorization for `token`: Porch's own, else the webroot's file."""
        try:
            body = self.storage.get(storage_key(token))
        except StorageError as e:
            ex.runtime.error_log.error(f"ACME challenge: {e}", site=ex.site)
            body = None
        if body is None and self.webroot is not None:
            body = read_webroot(self.webroot, token)
        return body


def read_webroot(root: str, token: str) -> bytes | None:
    """DIR/.well-known/acme-challenge/<token> if it is a regular file inside `root`
    (already resolved); None otherwise.  `token` must be checked base64url."""
    path = os.path.join(root, ".well-known", "acme-challenge", token)
    real = os.path.realpath(path)
    if os.path.commonpath((root, real)) != root:  # a symlink somewhere leads out
        return None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_FILE:
            return None
        return os.read(fd, _MAX_FILE)
    except OSError:
        return None
    finally:
        os.close(fd)


def for_site(site, storage: Storage) -> Responder | None:  # site: porch.config.model.Site
    """The responder `site` needs, or None when the path is nothing special there.

    Sites with ACME certificates, or an explicit `acme_challenge`, get one.  Sites
    with other TLS ("internal", files) get a pass-through one, so the challenge path
    is never redirected to https (another ACME client may be validating them).
    """
    from porch.tls.auto import wants_acme

    if wants_acme(site) or site.acme_challenge != "porch":
        return Responder(storage, site.acme_challenge)
    if site.tls != "off":
        return Responder(storage, "upstream")
    return None
