"""`balance = "cookie"`: a signed cookie that keeps a client on one target.

The value names the target by a digest of its address (not its position in the list:
a reload that reorders or extends `proxy` keeps clients where they are) and carries
an HMAC-SHA256 of the cookie's name and that id, keyed with a secret kept in
state_dir (`upstream/sticky.key`, made once, 32 random bytes), so that every worker
and every reload signs alike and a client cannot pick its target by forging the
value.  A cookie that is tampered with, unknown, or names a target that is down is
ignored: the request gets the normal choice (smooth weighted round robin) and a
new cookie.

Attributes: HttpOnly (scripts have no use for it), SameSite=Lax, Path=/, Secure when
the client came over HTTPS; no Expires: a session cookie, as nginx plus's `sticky
cookie` without `expires`, and Traefik's sticky cookie by default.
"""

from __future__ import annotations

import hmac
import os
import re
from hashlib import blake2b, sha256

from porch.storage import Storage

SECRET_KEY = "upstream/sticky.key"
_MAC_LENGTH = 16  # hex digits: 64 bits, plenty against guessing within a session
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_]")


def secret(storage: Storage) -> bytes:
    """The signing secret, made on first use (under a lock: workers compile at once)."""
    with storage.lock("upstream-sticky", timeout=10.0):
        found = storage.get(SECRET_KEY)
        if found is not None and len(found) >= 32:
            return found
        made = os.urandom(32)
        storage.put(SECRET_KEY, made)
        return made


def cookie_name(route_path: str) -> bytes:
    """porch_upstream for the route "/", porch_upstream_api for "/api/": one per route,
    so that two balanced routes of one site (both Path=/) do not overwrite each other."""
    slug = _NOT_TOKEN.sub("_", route_path.strip("/"))
    return (f"porch_upstream_{slug}" if slug else "porch_upstream").encode()


class Sticky:
    """A route's cookie: the Set-Cookie values (built at load) and the check of a
    request's Cookie headers."""

    def __init__(self, name: bytes, key: bytes, addresses: list[str]) -> None:
        self.name = name
        self._key = key
        ids = [blake2b(a.encode(), digest_size=6).hexdigest().encode() for a in addresses]
        self.values = [i + b"." + self._mac(i) for i in ids]
        self.by_value = {v: n for n, v in enumerate(self.values)}
        base = [b"%s=%s; Path=/; HttpOnly; SameSite=Lax" % (name, v) for v in self.values]
        self.plain = dict(zip(addresses, base))  # Set-Cookie values, by target address
        self.secure = {a: value + b"; Secure" for a, value in zip(addresses, base)}

    def _mac(self, target_id: bytes) -> bytes:
        return hmac.new(self._key, self.name + b"=" + target_id, sha256).hexdigest()[:_MAC_LENGTH].encode()

    def target_of(self, headers: list[bytes]) -> int:
        """The target index a valid cookie in `headers` (flat [name, b": ", value,
        b"\\r\\n", ...]) names, or -1."""
        for i in range(0, len(headers) - 3, 4):
            if len(headers[i]) == 6 and headers[i].lower() == b"cookie":
                found = self._in_header(headers[i + 2])
                if found >= 0:
                    return found
        return -1

    def _in_header(self, value: bytes) -> int:
        for pair in value.split(b";"):
            name, eq, text = pair.strip().partition(b"=")
            if eq and name == self.name:
                for known, index in self.by_value.items():
                    if hmac.compare_digest(known, text.strip()):
                        return index
        return -1

    def set_cookie(self, address: str, https: bool) -> bytes:
        """The Set-Cookie value that names the target at `address`."""
        return self.secure[address] if https else self.plain[address]
