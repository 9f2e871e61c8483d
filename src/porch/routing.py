"""Host and path routing, compiled once, immutable.

Host lookup (nginx server_name order, minus regexes): exact name, then the longest
matching `*.suffix` wildcard, then the catch-all site, else no site (404: never
"first site wins").  Path lookup: longest matching prefix.  A prefix route "/app/"
also answers "/app" with a 301 to "/app/" (nginx does the same for a location with a
trailing slash when it proxies).
"""

from __future__ import annotations

from typing import TypeVar

from porch.http.h1 import split_host

# Host headers remembered by HostTable.find (a client sending random names only
# pays the parsing, it cannot grow the memo past this).
HOST_MEMO_LIMIT = 4096

R = TypeVar("R")


class PathTable:
    """Prefix -> route, longest prefix first.  Not changed after `build`.
    (Generic in R by its annotations; compiled, an extension type: routing.pxd.)"""

    def __init__(self, entries: tuple[tuple[bytes, R], ...], slashless: frozenset[bytes]) -> None:
        self.entries = entries
        self.slashless = slashless  # "/app" for every "/app/" prefix without its own route

    @classmethod
    def build(cls, routes: dict[bytes, R]) -> PathTable[R]:
        entries = tuple(sorted(routes.items(), key=lambda kv: len(kv[0]), reverse=True))
        slashless = frozenset(
            p[:-1] for p in routes if len(p) > 1 and p.endswith(b"/") and p[:-1] not in routes
        )
        return cls(entries, slashless)

    def match(self, path: bytes) -> R | None:
        for prefix, route in self.entries:
            if path.startswith(prefix):
                return route
        return None

    def needs_slash(self, path: bytes) -> bool:
        """True when `path` is a prefix route's name without its trailing slash."""
        return path in self.slashless


S = TypeVar("S")


class HostTable:
    """Host name -> site.  Not changed after `build`, but for the memo of `find`."""

    def __init__(self, exact: dict[str, S], wildcards: tuple[tuple[str, S], ...], default: S | None) -> None:
        self.exact = exact
        self.wildcards = wildcards  # (".example.org", site), longest first
        self.default = default
        self.memo: dict[bytes, tuple[str, S | None] | None] = {}

    @classmethod
    def build(cls, sites: list[tuple[tuple[str, ...], S]]) -> HostTable[S]:
        exact: dict[str, S] = {}
        wild: list[tuple[str, S]] = []
        default = None
        for hosts, site in sites:
            if not hosts:
                default = site
            for host in hosts:
                if host.startswith("*."):
                    wild.append((host[1:], site))
                else:
                    exact[host] = site
        wild.sort(key=lambda w: len(w[0]), reverse=True)
        return cls(exact, tuple(wild), default)

    def lookup(self, host: str) -> S | None:
        site = self.exact.get(host)
        if site is not None:
            return site
        for suffix, wsite in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return wsite
        return self.default

    def find(self, header: bytes) -> tuple[str, S | None] | None:
        """(host name, site or None) for a raw Host header; None if the header is not
        a valid host.  Memoised: most requests repeat a few Host values."""
        found = self.memo.get(header, False)
        if found is not False:
            return found  # type: ignore[return-value]
        split = split_host(header) if header else ("", b"")
        found = None if split is None else (split[0], self.lookup(split[0]))
        if len(self.memo) < HOST_MEMO_LIMIT:
            self.memo[header] = found
        return found
