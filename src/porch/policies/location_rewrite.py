"""The upstream's own URLs in its response become the client's: nginx's
`proxy_redirect default`, Apache's ProxyPassReverse, on every proxied route.

An app behind a proxy answers `Location: http://127.0.0.1:8080/login` (or its
Refresh header says so): passed on as it is, the browser would go to an address it
cannot reach.  A URL of the upstream's own (one of the route's proxy URLs, the
address its connection reached, or the Host it was sent) is rewritten to the
client's scheme, host and port, plus the route's stripped prefix; on a
`strip_prefix` route a path-absolute URL gets the prefix.  Other URLs pass as they are.

Like the forwarding headers (policies/forwarding.py), every proxied route has this
policy, so it has no phase hook that would make every response build a
`ResponseHead`: the HTTP/1.1 response parser sets Location and Refresh apart, and the
exchange calls `location` / `refresh` on those values only (a response without them
pays nothing).  The URL work is http/location.py.
"""

from __future__ import annotations

from porch.http import location
from porch.pipeline import Context, Policy


class LocationRewrite(Policy):
    """One per proxied route, made by config/compile.py from the route's settings."""

    name = "location_rewrite"

    __slots__ = ("prefix", "base_path", "origins", "upstream_host")

    def __init__(self, prefix: bytes | None, base_path: bytes, origins: tuple[bytes, ...],
                 upstream_host: bytes | None) -> None:
        self.prefix = prefix or b""  # the stripped prefix (strip_prefix), b"" without one
        self.base_path = base_path  # the proxy URL's path, which the client does not see
        self.origins = origins  # the route's proxy URLs' origins (lowercase scheme://authority)
        self.upstream_host = upstream_host  # the Host the upstream is sent, when not the client's

    def location(self, ctx: Context, value: bytes) -> bytes:
        """A Location (or Content-Location) value as the client gets it."""
        prefix = self.prefix
        if value[:1] == b"/":
            if prefix and value[:2] != b"//" and not location.under(value, prefix):
                return prefix + value
            return value  # (with the prefix: the app knows it, from X-Script-Name)
        split = location.split_origin(value)
        if split is None or not self._upstreams(ctx, split[0]):
            return value
        rest = location.after_base(split[1], self.base_path)
        trusted = ctx.peer_trusted
        host = ctx.xf_host if trusted and ctx.xf_host else ctx.host_header
        scheme = ctx.xf_proto if trusted and ctx.xf_proto else ctx.scheme
        return b"%s://%s%s%s" % (scheme, host or b"", prefix, rest)

    def refresh(self, ctx: Context, value: bytes) -> bytes:
        """A Refresh value (`5; url=...`) with its URL rewritten as Location's."""
        parts = location.refresh_url(value)
        if parts is None:
            return value
        return parts[0] + self.location(ctx, parts[1]) + parts[2]

    def _upstreams(self, ctx: Context, origin: bytes) -> bool:
        """Whether `origin` (lowercase scheme://authority) is the upstream's own: one of
        the proxy URLs, the Host it was sent (an app building URLs from its request),
        or the address its connection reached (`localhost` as 127.0.0.1)."""
        if origin in self.origins:
            return True
        peer = ctx.upstream_peer
        if peer is None:
            return False
        scheme, address, port = peer
        sent = self.upstream_host or ctx.host_header
        if sent and origin == b"%s://%s" % (scheme.encode(), sent.lower()):
            return True
        return bool(address) and origin in location.authorities(scheme, address, port)
