"""HSTS: the site's Strict-Transport-Security on every HTTPS response (RFC 6797).

Every response over HTTPS carries it, Porch's own answers included (errors, redirects,
the 101 of a WebSocket): RFC 6797 7.1 asks for it on each response over a secure
transport, and 7.2 forbids it over plain HTTP, which therefore never gets it.  The
site's value replaces one the app sent: a browser heeds only the first (RFC 6797 8.1),
and the operator's config is the one to win.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from porch.pipeline import Context, Policy

if TYPE_CHECKING:
    from porch.http.model import ResponseHead

NAME = b"Strict-Transport-Security"
_LOWER = frozenset({NAME.lower()})


class Hsts(Policy):
    name = "hsts"
    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value.encode()  # "max-age=31536000; includeSubDomains"

    def response(self, ctx: Context, head: ResponseHead) -> None:
        if ctx.scheme == b"https":
            headers = head.headers
            headers.remove_all(_LOWER)
            headers.add(NAME, self.value)
