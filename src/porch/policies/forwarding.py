"""Forwarding headers: what the upstream is told about the client (on every route).

    X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Port

- A client that connects directly is the client: the fields say its address, the
  scheme and port it reached Porch on, and the Host it sent (with its port, as
  Apache's mod_proxy and Traefik send it).  What it sent in those fields itself was
  dropped when its head was read (http/forwarding.py FORWARDING): they are trivially
  spoofed, and apps trust them for logging, rate limits and redirects.
- A trusted proxy (`trusted_proxies`) terminated the client's connection and knows:
  its X-Forwarded-For chain goes on with the proxy's address appended, X-Real-IP is
  the real client found in that chain (http/forwarding.py real_client), and its
  X-Forwarded-Proto/Host/Port are passed on.
- Porch's fields come before the route's header rules (pipeline.ORDER), so a
  `request_headers` rule may still replace or remove one.

Every route has this policy (config/compile.py adds it): the upstream never has to
guess.  It runs compiled (_compiled.py MODULES): it is on every proxied request.
"""

from __future__ import annotations

from porch.http.model import CRLF, Headers, RequestHead
from porch.pipeline import Context, Policy


class Forwarding(Policy):
    name = "forwarding"
    __slots__ = ()

    def upstream_request(self, ctx: Context, head: RequestHead) -> None:
        if ctx.peer_trusted:
            wire = trusted_part(ctx.peer_ip, ctx.scheme, ctx.local_port, ctx.host_header, ctx.client_ip,
                                ctx.xff, ctx.xf_proto, ctx.xf_host, ctx.xf_port)
        else:
            wire = b"".join((connection_part(ctx.peer_ip, ctx.scheme, ctx.local_port),
                             b"X-Forwarded-Host: ", ctx.host_header or b"", CRLF))
        head.headers.flat += Headers.parse(wire).flat


# The exchange calls the functions below directly (typed, forwarding.pxd) on a route
# whose only upstream_request hook is this policy, and keeps `connection_part` per
# connection: the fields through a RequestHead cost ~5,000 instructions a request,
# 13% of a whole proxied one (bench/hotpath.py, 2026-12-02).


def connection_part(peer_ip: str, scheme: bytes, local_port: bytes) -> bytes:
    """The fields that every request of a connection from an untrusted client shares
    (X-Forwarded-Host, the one that is not, follows them)."""
    ip = peer_ip.encode()
    return b"".join((b"X-Forwarded-For: ", ip, b"\r\nX-Real-IP: ", ip, b"\r\nX-Forwarded-Proto: ", scheme,
                     b"\r\nX-Forwarded-Port: ", local_port, CRLF))


def trusted_part(peer_ip: str, scheme: bytes, local_port: bytes, host_header: bytes | None, client_ip: str,
                 xff: bytes | None, xf_proto: bytes | None, xf_host: bytes | None,
                 xf_port: bytes | None) -> bytes:
    """The fields when a trusted proxy connected: its knowledge passed on, its own
    address appended to the X-Forwarded-For chain."""
    peer = peer_ip.encode()
    return b"".join((
        b"X-Forwarded-For: ", xff + b", " + peer if xff else peer,
        b"\r\nX-Real-IP: ", client_ip.encode(),
        b"\r\nX-Forwarded-Proto: ", xf_proto or scheme,
        b"\r\nX-Forwarded-Host: ", xf_host or host_header or b"",
        b"\r\nX-Forwarded-Port: ", xf_port or local_port, CRLF,
    ))


FORWARDING = Forwarding()  # stateless: every route shares it
