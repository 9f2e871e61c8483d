"""TRACE refused with 405, unless the route says `allow_trace = true`.

    [[site.route]]
    path = "/debug/"
    proxy = "http://127.0.0.1:8081"
    allow_trace = true          # TRACE goes to this upstream

Cross-site tracing: an app that echoes a TRACE request gives a page the cookies and
credentials it cannot read otherwise, so TRACE is answered 405 on every route that
does not ask for it (nginx refuses TRACE while it reads the head, with 405 too).  The
answer lists the methods a proxied route commonly takes (RFC 9110 15.5.6: a 405 says
what is allowed; the upstream's own list is not known here), TRACE and CONNECT left out.

The policy acts on TRACE only (`methods`): the chain of every other method leaves it
out (pipeline.Chain.for_method), so a GET pays nothing for it.  The compile step puts
it on every route without `allow_trace` (config/compile.py); it is not a registry key.
"""

from __future__ import annotations

from porch.http.model import Headers
from porch.pipeline import Context, Policy, Reply

TRACE = b"TRACE"
ALLOW = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
CAUSE = "TRACE is not allowed (allow_trace = true on the route passes it)"


class TraceRefusal(Policy):
    """405 for TRACE (module docstring); stateless, so one instance serves every route."""

    name = "allow_trace"
    methods = frozenset({TRACE})
    __slots__ = ()

    def request(self, ctx: Context) -> Reply | None:
        if ctx.method != TRACE:  # (never called for another method: see `methods`)
            return None
        # a fresh Headers each time: the exchange adds its fields to the reply's
        return Reply(405, headers=Headers.of([(b"Allow", ALLOW)]), cause=CAUSE)


REFUSE_TRACE = TraceRefusal()
