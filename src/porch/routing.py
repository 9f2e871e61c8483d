"""Host and path routing, compiled once, immutable.

Host lookup (nginx server_name order, minus regexes): exact name, then the longest
matching `*.suffix` wildcard, then the catch-all site, else no site (404: never
"first site wins").  A prefix route "/app/" also answers "/app" with a 301 to "/app/"
(nginx does the same for a location with a trailing slash when it proxies).

Path lookup, as nginx picks a location (ngx_http_core_find_location):
1. an exact route (`exact = "/x"`, nginx `location = /x`) for exactly this path wins;
2. else the longest matching prefix route is remembered; if it has `priority =
   "prefix"` (nginx `^~`), it wins;
3. else the pattern routes (`regex`, nginx `~` / `~*`, and `match` globs), in file
   order: the first that matches wins;
4. else the remembered prefix route, or none (404).
A site with prefix routes only (the common case) pays one flag test over the plain
longest-prefix loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from porch.http.h1 import split_host

# Host headers remembered by HostTable.find (a client sending random names only
# pays the parsing, it cannot grow the memo past this).
HOST_MEMO_LIMIT = 4096

R = TypeVar("R")


class PathTable:
    """Path -> route, in nginx's location order (module docstring).  Not changed after
    `build`.  (Generic in R by its annotations; compiled, an extension type: routing.pxd.)"""

    def __init__(self, entries: tuple[tuple[bytes, R], ...], slashless: frozenset[bytes],
                 exact: dict[bytes, R] | None = None,
                 patterns: tuple[tuple[Callable[[bytes], object], R], ...] = (),
                 stops: frozenset[bytes] = frozenset()) -> None:
        self.entries = entries  # prefix routes, longest first
        self.slashless = slashless  # "/app" for every "/app/" prefix without its own route
        self.exact = exact or {}
        self.patterns = patterns  # (test, route) in file order
        self.stops = stops  # prefixes with priority = "prefix" (nginx ^~)
        self.nginx = bool(self.exact or patterns)  # else: longest prefix, nothing more

    @classmethod
    def build(cls, routes: dict[bytes, R], exact: dict[bytes, R] | None = None,
              patterns: tuple[tuple[Callable[[bytes], object], R], ...] = (),
              stops: frozenset[bytes] = frozenset()) -> PathTable[R]:
        """`routes`: prefix -> route; `exact`: path -> route; `patterns`: (test, route)
        in file order (`matcher` makes the tests); `stops`: prefixes that win over
        patterns."""
        entries = tuple(sorted(routes.items(), key=lambda kv: len(kv[0]), reverse=True))
        exact = exact or {}
        slashless = frozenset(
            p[:-1] for p in routes
            if len(p) > 1 and p.endswith(b"/") and p[:-1] not in routes and p[:-1] not in exact
        )
        return cls(entries, slashless, exact, patterns, stops)

    def match(self, path: bytes) -> R | None:
        if self.nginx:
            return self._select(path)
        for prefix, route in self.entries:
            if path.startswith(prefix):
                return route
        return None

    def _select(self, path: bytes) -> R | None:
        """nginx's order (module docstring), for a table with exact or pattern routes."""
        found = self.exact.get(path)
        if found is not None:
            return found
        longest = None
        for prefix, route in self.entries:
            if path.startswith(prefix):
                if prefix in self.stops:
                    return route
                longest = route
                break
        for test, route in self.patterns:
            if test(path) is not None:
                return route
        return longest

    def needs_slash(self, path: bytes) -> bool:
        """True when `path` is a prefix route's name without its trailing slash."""
        return path in self.slashless


def glob_regex(glob: str) -> str:
    """A path glob as a regular expression, anchored at both ends: `*` any run of
    characters ("/" too: `*.css` is every .css path), `?` one character, `[...]` a
    class (`[!...]` negated), `{a,b}` alternatives (not nested).  ValueError names
    what is wrong (an unclosed brace or bracket, a nested brace)."""
    out, i, depth = [], 0, 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = glob.find("]", i + 2)
            if end < 0:
                raise ValueError(f"a [ at {i} has no ]")
            body = glob[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "{":
            if depth:
                raise ValueError(f"a {{ at {i} inside another {{...}}; braces do not nest")
            depth = 1
            out.append("(?:")
        elif c == "}" and depth:
            depth = 0
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError("a { has no }")
    return "".join(out) + r"\Z"


def matcher(kind: str, pattern: str, case: bool = True) -> Callable[[bytes], object]:
    """The test of a pattern route on the clean path (None: no match): `kind` "regex"
    (searched anywhere, as nginx's ~; `case` False is ~*) or "glob" (the whole path)."""
    if kind == "glob":
        return re.compile(glob_regex(pattern).encode()).match
    return re.compile(pattern.encode(), 0 if case else re.IGNORECASE).search


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
