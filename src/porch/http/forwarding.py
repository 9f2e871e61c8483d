"""Forwarding headers: who the client really is, and what the upstream is told.

Rules (nginx realip with `real_ip_recursive on`, Caddy's trusted_proxies):
- A client connecting directly is the client.  Whatever it sent in X-Forwarded-*,
  X-Real-IP or Forwarded is dropped: those headers are trivially spoofed.
- A connection from a trusted proxy keeps its X-Forwarded-For chain; the real client
  is the right-most address in the chain that is not itself trusted, and the
  connecting address is appended.  X-Forwarded-Proto/Host/Port from a trusted proxy
  are passed on (it terminated TLS, it knows).
- Identity headers (X-Remote-User and friends) from clients are always dropped: only
  Porch's own authentication may set them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Client headers Porch never forwards as received: it re-creates the ones it owns.
FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-ssl",
        b"x-real-ip",
        b"forwarded",
        b"x-script-name",
    }
)

# Identity headers that apps (Radicale, many SSO setups) trust blindly.
IDENTITY = frozenset(
    {
        b"x-remote-user",
        b"remote-user",
        b"x-forwarded-user",
        b"x-forwarded-email",
        b"x-forwarded-preferred-username",
        b"x-forwarded-groups",
        b"x-auth-request-user",
        b"x-auth-request-email",
        b"x-webauth-user",
    }
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """A compiled `trusted_proxies` list."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, cidrs: tuple[str, ...] | list[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


def real_client(peer: str, xff: bytes, trusted: TrustedProxies) -> str:
    """The right-most address of `xff` + `peer` that is not a trusted proxy.

    Called only when `peer` is trusted.  When every hop is trusted, the left-most
    address is the client (nginx does the same).  Garbage entries stop the walk:
    an unparseable hop cannot be trusted, so it is taken as the client address.
    """
    hops = [h.strip() for h in xff.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted.contains(hop):
            return hop
    return hops[0] if hops else peer


def forwarded_for(peer: str, xff: bytes | None) -> bytes:
    """The X-Forwarded-For value to send upstream from a trusted connection."""
    if xff:
        return xff + b", " + peer.encode()
    return peer.encode()
