"""`strip_prefix = true` on a route: the app behind it does not know its prefix.

    [[site.route]]
    path = "/radicale/"
    proxy = "http://127.0.0.1:5232"
    strip_prefix = true

The upstream gets the path without the route's prefix (`/radicale/alice/` becomes
`/alice/`) and learns the prefix from X-Script-Name (WSGI's SCRIPT_NAME: Radicale's
guide asks nginx for exactly this) and X-Forwarded-Prefix (Traefik's and Spring's
name for it), so it can build its own links.  The prefix goes back into the
Location of its redirects in the Location rewrite (server/proxy.py, nginx's
`proxy_redirect default`).

Clients' own X-Script-Name and X-Forwarded-Prefix were dropped with the other
forwarding fields (http/forwarding.py): an app trusting them could be pointed at
any path.
"""

from __future__ import annotations

from porch.http.model import CRLF, SEP, RequestHead
from porch.pipeline import Context, Policy


class StripPrefix(Policy):
    name = "strip_prefix"
    __slots__ = ("prefix", "fields")

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix  # b"/radicale": the route's path without its last "/"
        self.fields = [b"X-Script-Name", SEP, prefix, CRLF, b"X-Forwarded-Prefix", SEP, prefix, CRLF]

    def upstream_request(self, ctx: Context, head: RequestHead) -> None:
        target = head.target
        if target == b"*":  # OPTIONS *: no path to strip (RFC 9112 3.2.4)
            return
        if target.startswith(self.prefix):
            target = target[len(self.prefix):]
            if not target.startswith(b"/"):  # "/radicale" or "/radicale?x": the app's root
                target = b"/" + target
            head.target = target
        head.headers.flat += self.fields


def for_route(path: str, strip: bool) -> StripPrefix | None:
    """The policy for a route at `path` (its `strip_prefix` value), or None."""
    if not strip or path == "/":
        return None
    return StripPrefix(path.rstrip("/").encode())
