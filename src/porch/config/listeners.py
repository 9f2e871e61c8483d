"""Listeners: where Porch accepts connections, and which sites each one serves.

The model derives them from [porch]: on each `bind` address, a plain listener on
`http_port`, and a TLS one on `https_port` when a site serves HTTPS (a third kind,
port 443 shared with other protocols, comes later: server/mux.py).  Whether a
connection speaks TLS is the kind of the listener that accepted it, never a
comparison of port numbers.

A site serves on every listener unless it says otherwise, as nginx server blocks do
with their `listen` lines:

    listen = "http"                     # the plain listener, on every bind address
    listen = ["https"]                  # the TLS one
    listen = [":8443", "127.0.0.1:80"]  # by port (every address) or address and port

so one host name on port 80 and on 443 can be two sites (Snikket's guide proxies port
80 to the app's HTTP port and 443 to its HTTPS port).  A host name belongs to one
site per listener.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from porch.config.model import Config, Global, Listener, Site

NAMES = {"http": "plain", "https": "tls"}  # what `listen` calls each kind
_EXAMPLE = '"http", "https", ":8443" or "127.0.0.1:80"'
ListenSpec = tuple[str | None, int | str]  # (address or None for all, port or a kind)


def parse(value: Any) -> tuple[ListenSpec, ...]:
    """`listen` as written -> specs, resolved against [porch] by `resolve`."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{_show(value)} is not a listener; expected {_EXAMPLE}, or an array of them")
    specs = []
    for text in items:
        spec = _spec(text)
        if spec in specs:
            raise ValueError(f"{_show(text)} is listed twice")
        specs.append(spec)
    return tuple(specs)


def _spec(text: str) -> ListenSpec:
    if text in NAMES:
        return None, NAMES[text]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{_show(text)} is not a listener; expected {_EXAMPLE}")
    if not host:
        return None, int(port)
    bracketed = host.startswith("[") and host.endswith("]")
    if ":" in host and not bracketed:  # "::1:80" is an IPv6 address of its own
        raise ValueError(f"{_show(text)}: an IPv6 address goes in brackets; write {_show(f'[{host}]:{port}')}")
    inner = host[1:-1] if bracketed else host
    try:
        return str(ipaddress.ip_address(inner)), int(port)
    except ValueError:
        raise ValueError(f"{_show(text)}: {_show(host)} is not an IP address; expected {_EXAMPLE}") from None


def possible(g: Global) -> tuple[Listener, ...]:
    """Every listener [porch] can have: plain ones first, in bind order, then TLS."""
    return (tuple(Listener(a, g.http_port, "plain") for a in g.bind)
            + tuple(Listener(a, g.https_port, "tls") for a in g.bind))


def derive(g: Global, sites: Iterable[Site]) -> tuple[Listener, ...]:
    """The listeners `sites` need: the TLS ones only when a site serves HTTPS."""
    tls = any(site.tls != "off" for site in sites)
    return tuple(listener for listener in possible(g) if listener.kind == "plain" or tls)


def resolve(specs: tuple[ListenSpec, ...], g: Global) -> tuple[tuple[Listener, ...], list[str]]:
    """The listeners `specs` name, in `possible` order, and a problem for each spec
    that names none (a port or address Porch does not listen on)."""
    every = possible(g)
    chosen: set[Listener] = set()
    problems = []
    for address, port in specs:
        found = [l for l in every if _matches(l, address, port)]
        if not found:
            problems.append(_nowhere(address, port, g))
        chosen.update(found)
    return tuple(l for l in every if l in chosen), problems


def _matches(listener: Listener, address: str | None, port: int | str) -> bool:
    if isinstance(port, str):
        return listener.kind == port
    return listener.port == port and (address is None or listener.address == address)


def _nowhere(address: str | None, port: int | str, g: Global) -> str:
    where = f"{address}:{port}" if address and ":" not in address else f"[{address}]:{port}" if address else f":{port}"
    if address is not None and port in (g.http_port, g.https_port):
        return (f"{_show(where)}: Porch does not listen on {address} (bind is"
                f" {', '.join(g.bind)}); add it to [porch] bind, or write {_show(f':{port}')}")
    return (f"{_show(where)}: Porch listens on http_port {g.http_port} and https_port {g.https_port};"
            f' write "http", "https", ":{g.http_port}" or ":{g.https_port}"')


def spelled(listen: tuple[Listener, ...], g: Global) -> list[str]:
    """`listen` as porch.toml writes it: a kind's name when it has all its addresses."""
    out = []
    for name, kind in NAMES.items():
        of_kind = [l for l in possible(g) if l.kind == kind]
        mine = [l for l in listen if l.kind == kind]
        if mine and mine == of_kind:
            out.append(name)
        else:
            out += [l.where for l in mine]
    return out


def of(config: Config) -> tuple[Listener, ...]:
    """`config`'s listeners (derived here for a Config built by hand)."""
    return config.listeners or derive(config.porch, config.sites)


def kind_at(config: Config, address: str, port: int) -> str | None:
    """The kind of the listener on (address, port), None if `config` has none there."""
    return next((l.kind for l in of(config) if (l.address, l.port) == (address, port)), None)


def serves(site: Site, listener: Listener) -> bool:
    return not site.listen or listener in site.listen


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
