"""`allow` and `deny`: which client addresses may use a site or route (nginx's
ngx_http_access_module), answered 403 otherwise, with a log line.

    allow = ["10.0.0.0/8", "192.168.1.0/24", "::1"]
    deny = ["10.0.0.13"]

- Addresses are the real client's, after trusted_proxies (the X-Forwarded-For of a
  trusted proxy names it), IPv4-mapped IPv6 (::ffff:10.0.0.1) read as IPv4.
- With `allow` only, every address outside it is refused (nginx's
  `allow ...; deny all;`); with `deny` only, every address outside it is let in.
- With both, `deny` is checked first: an address must not be in `deny`, and must be
  in `allow`.  That is nginx's `deny` lines written before the `allow` lines, then
  `deny all`; nginx's first-match order over one mixed list cannot be written with
  two TOML lists, and "deny wins" is the reading that never lets in more than meant.
- "all" stands for every address.  A route's list replaces its site's, a site's
  [porch]'s (nginx's inheritance of these directives).
- Networks are compiled at load time into one set per prefix length, so a check is a
  few set lookups; decisions are remembered per address (a bounded cache).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from porch.pipeline import Context, Policy, Reply

_CACHE_MAX = 4096
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


@dataclass(frozen=True)
class Networks:
    """A list as written, normalised ("10.0.0.0/8", "::1/128")."""

    networks: tuple[str, ...]


def parse(value: Any) -> Networks:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f'{value!r} is not a list of addresses or networks; write'
                         ' ["10.0.0.0/8", "::1"] ("all" for every address)')
    out = []
    for item in value:
        if item == "all":
            out += ["0.0.0.0/0", "::/0"]
            continue
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not an address or network such as \"10.0.0.0/8\"")
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an address or network such as \"10.0.0.0/8\""
                             ' or "::1"') from None
        out.append(str(_unmapped(net)))
    return Networks(tuple(out))


def dump(config: Networks) -> list[str]:
    """The list as porch.toml spells it (`porch check --dump`)."""
    return list(config.networks)


def describe(config: Networks) -> str:
    return ", ".join(config.networks)


def _unmapped(net):
    """::ffff:10.0.0.0/104 is 10.0.0.0/8: clients are matched as IPv4."""
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        return ipaddress.ip_network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


class _Matcher:
    """Networks by family and prefix length: a match is a set lookup per length."""

    __slots__ = ("v4", "v6")

    def __init__(self, networks: Networks) -> None:
        groups: dict[tuple[int, int], set[int]] = {}
        for text in networks.networks:
            net = ipaddress.ip_network(text)
            bits = net.max_prefixlen
            groups.setdefault((net.version, net.prefixlen), set()).add(
                int(net.network_address) >> (bits - net.prefixlen))
        self.v4 = tuple((32 - plen, frozenset(s)) for (v, plen), s in sorted(groups.items()) if v == 4)
        self.v6 = tuple((128 - plen, frozenset(s)) for (v, plen), s in sorted(groups.items()) if v == 6)

    def contains(self, version: int, value: int) -> bool:
        for shift, nets in self.v4 if version == 4 else self.v6:
            if value >> shift in nets:
                return True
        return False


def _address(ip: str) -> tuple[int, int] | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


class AddressRules(Policy):
    """`allow` (when given: only these) and `deny` (never these)."""

    name = "allow"
    __slots__ = ("allow", "deny", "cache")

    def __init__(self, allow: Networks | None, deny: Networks | None) -> None:
        self.allow = None if allow is None else _Matcher(allow)
        self.deny = None if deny is None else _Matcher(deny)
        self.cache: dict[str, str] = {}  # address -> "" (let in) or why refused

    def refusal(self, ip: str) -> str:
        """Why `ip` is refused, "" when it is let in."""
        found = self.cache.get(ip)
        if found is None:
            found = self._decide(ip)
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[ip] = found
        return found

    def _decide(self, ip: str) -> str:
        addr = _address(ip)
        if addr is None:  # not an address (a unix socket peer): only `deny` alone lets it in
            return "" if self.allow is None else f"client address {ip!r} is not in allow"
        if self.deny is not None and self.deny.contains(*addr):
            return f"client {ip} is in deny"
        if self.allow is not None and not self.allow.contains(*addr):
            return f"client {ip} is not in allow"
        return ""

    def request(self, ctx: Context) -> Reply | None:
        why = self.refusal(ctx.client_ip)
        return Reply(403, cause=f"access forbidden: {why}") if why else None


def build_allow(config: Networks, env: Any = None) -> Policy:
    return AddressRules(config, None)


def build_deny(config: Networks, env: Any = None) -> Policy:
    return AddressRules(None, config)
