"""The host table of each listener (config/listeners.py), for config/compile.py.

A connection routes among the sites of the listener that accepted it: the table is
chosen when the connection is made (server/listener.py), so a request pays nothing
for it.  While no site has `listen`, every listener shares the one table of all sites.

A site with a certificate that does not serve on a plain listener (`listen =
"https"`) still has a stand-in there for its names that no site of that listener
claims: the CA validates HTTP-01 on port 80 (RFC 8555 8.3), and a browser that types
the bare name should land on https:// (redirect_http), as for any TLS site.  Other
paths of a stand-in are 404.
"""

from __future__ import annotations

from collections.abc import Callable

from porch.config.listeners import serves
from porch.config.model import Config, Listener, Site
from porch.routing import HostTable, PathTable
from porch.runtime import SiteRuntime

Compiled = list[tuple[tuple[str, ...], SiteRuntime]]  # (hosts, site) in config order


def listener_hosts(config: Config, listeners: tuple[Listener, ...], sites: Compiled, every: HostTable,
                   stand_in: Callable[[Site], SiteRuntime]) -> dict[tuple[str, int], HostTable]:
    """(address, port) -> host table, for each listener; {} while no site has `listen`
    (then every connection uses `every`)."""
    if not any(site.listen for site in config.sites):
        return {}
    tables: dict[tuple[tuple[int, ...], str], HostTable] = {}
    stand_ins: dict[int, SiteRuntime] = {}
    out = {}
    for listener in listeners:
        members = tuple(i for i, site in enumerate(config.sites) if serves(site, listener))
        key = (members, listener.kind)
        if key not in tables:
            table = [sites[i] for i in members]
            if listener.kind == "plain":
                table = _stand_ins(config, members, stand_ins, stand_in) + table
            tables[key] = every if table == sites else HostTable.build(table)
        out[listener.address, listener.port] = tables[key]
    return out


def _stand_ins(config: Config, members: tuple[int, ...], made: dict[int, SiteRuntime],
               stand_in: Callable[[Site], SiteRuntime]) -> Compiled:
    """Stand-ins for the TLS sites not among `members`, for the names none of them has
    (listed first: HostTable.build lets a later site win a name)."""
    claimed = {host for i in members for host in config.sites[i].hosts}
    out: Compiled = []
    for i, site in enumerate(config.sites):
        if i in members or site.tls == "off" or not site.hosts:
            continue
        names = tuple(host for host in site.hosts if host not in claimed)
        if names:
            if i not in made:
                made[i] = stand_in(site)
            out.append((names, made[i]))
    return out


def acme_hosts(config: Config) -> frozenset[str]:
    """Names of the sites that get ACME certificates."""
    from porch.tls.auto import wants_acme

    return frozenset(h for site in config.sites if wants_acme(site) for h in site.hosts)


def empty_site(name: str, chain) -> SiteRuntime:
    """A site with no routes: its chain runs, then 404."""
    return SiteRuntime(name=name, paths=PathTable.build({}), chain=chain)
