"""The redirect to a prefix route's slash: "/radicale" -> 301 "/radicale/".

A prefix route "/radicale/" does not take "/radicale" (it is not under the prefix),
yet that is what a user types: the path is answered 301 to itself with the slash,
query kept (nginx does the same for a location ending in a slash that proxies; its
Location is absolute, Porch's relative, which RFC 9110 10.2.2 allows).  It applies to a path equal to a prefix
route's name without its slash when no exact route and no prefix route has that
name (routing.PathTable.slashless): such a path is taken by no route, even if a
shorter prefix ("/") or a pattern would match it, so it meets the site's own chain,
where this policy is (config/compile.py: only on a site with such prefixes; never on
a route's chain, so a request that a route takes pays nothing for it).

It comes after the site's own policies that answer first (the ACME responder, the
move to HTTPS, client refusals, auth, a site-wide `root`: pipeline.ORDER), as it did
when server/proxy.py answered it after them.
"""

from __future__ import annotations

from porch.http.model import Headers
from porch.pipeline import Context, Policy, Reply


class TrailingSlash(Policy):
    name = "trailing_slash"
    __slots__ = ("slashless",)

    def __init__(self, slashless: frozenset[bytes]) -> None:
        self.slashless = slashless  # b"/radicale" for a prefix route b"/radicale/"

    def request(self, ctx: Context) -> Reply | None:
        path = ctx.path
        if path in self.slashless:
            return Reply(301, headers=Headers.of([(b"Location", path + b"/" + ctx.query)]))
        return None


def for_paths(slashless: frozenset[bytes]) -> TrailingSlash | None:
    """The policy for a site whose prefix routes have these names without their slash
    (None: there are none, no policy)."""
    return TrailingSlash(slashless) if slashless else None
