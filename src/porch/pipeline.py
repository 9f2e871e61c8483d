"""The request pipeline: named phases, policies that hook into them, chains compiled per route.

Every behaviour that acts on requests or responses is a `Policy` (one module under
`policies/`).  A policy overrides only the hooks it needs; the others are the no-op
defaults below, and a route's `Chain` holds, per phase, the tuple of bound methods
of the policies that override that phase, built once at load time.  A route with no
policy has empty tuples: the exchange tests one tuple's truth per phase and pays
nothing else (Pingora's ProxyHttp, Envoy's filter chains).

The phases, in the order a request meets them:

1. ``request(ctx)``: may answer at once (return a `Reply`), let the request go on
   (return None), or wait (return an awaitable that yields a `Reply` or None: the
   exchange stops reading from the client meanwhile, as for backpressure).  Runs
   before the upstream is chosen: ACME challenges, redirects, auth, rate limits,
   static files.
2. ``upstream_request(ctx, head)``: rewrite the `RequestHead` that goes upstream
   (prefix strip, forwarding headers, header rules).
3. ``response(ctx, head)``: rewrite the `ResponseHead` that goes back, the
   upstream's or Porch's own reply (HSTS, Location rewrite, header rules, the choice
   to compress).
4. ``response_body(ctx, data, end)``: transform body chunks as they pass, never
   buffering a whole body; the call with ``end=True`` (``data`` may be b"") may
   return what a transformation still held (a compressor's last block).
5. ``log(ctx)``: once per request, also for errors, aborted requests and tunnels.

The framework owns the order, not the config (Caddy's directive order): `ORDER`
below lists every policy name once.  Request-side phases (1, 2) run in that order;
response-side phases (3, 4) run in reverse, so the policy that saw the request first
sees the response last, as nested middleware would; `log` runs in order.

A policy never edits the exchange or the connection classes: it sees the request
through the `Context` interface (implemented by the server's exchange) and acts by
what it returns or by changing the heads it is given.  If a policy needs something
`Context` lacks, add it to `Context`, once, for all policies.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Protocol

from porch.http.model import Headers, RequestHead, ResponseHead

# The one order of every policy (names are `Policy.name`).  Why this order:
# - the ACME responder first: validation requests are never redirected, refused,
#   authenticated or rate-limited (RFC 8555 8.3);
# - then the move to HTTPS: anything else on plain HTTP only gets a redirect, so
#   credentials are never asked for, nor sent, in clear;
# - client refusals cheapest first (IP rules, connection and rate limits) before
#   authentication, so a flood never reaches the password check;
# - a rate limit keyed on the user (rate_limit_user) needs authentication's verdict;
# - authentication before anything that answers with content (static files) or
#   changes the request for the upstream;
# - static files (root) next: they answer for themselves (405 with "Allow: GET, HEAD"
#   to other methods, a body never read), and what they let through (try_files) goes
#   on to the checks below before the upstream;
# - then the checks on what would go upstream, the TRACE refusal before the body limit:
#   nginx refuses TRACE while it reads the head, before client_max_body_size's 413
#   (checked when it picks the location); both stay after the client refusals and
#   auth above, where server/proxy.py had them before they were policies (issue 12);
# - the redirect to a prefix route's slash runs on a site's own chain only (a path no
#   route takes): after the site's policies above, as before (policies/trailing_slash.py);
# - upstream-side rewrites: the prefix strip before the forwarding headers (they
#   carry the prefix), user header rules last, so a user's rule wins;
# - response side, in reverse: header rules and security headers see the response
#   after compression chose its encoding; HSTS is added last of all.
ORDER: tuple[str, ...] = (
    "acme_challenge",
    "https",
    "hsts",
    "allow",
    "max_connections_per_client",
    "rate_limit",
    "basic_auth",
    "forward_auth",
    "rate_limit_user",
    "root",
    "allow_trace",
    "max_body",
    "trailing_slash",
    "strip_prefix",
    "forwarding",
    "location_rewrite",
    "request_headers",
    "response_headers",
    "security_headers",
    "expires",
    "compress",
)
_RANK = {name: i for i, name in enumerate(ORDER)}
PHASES = ("request", "upstream_request", "response", "response_body", "log")


class FileBody:
    """A response body read from an open file: `length` bytes of `fd` from `offset`.

    The exchange that answers with it owns `fd` from then on: it streams the bytes
    with flow control (never the whole file in memory) and closes `fd` when the
    response ends, is cut, or is never sent (HEAD, a client gone)."""

    __slots__ = ("fd", "offset", "length")

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class Reply:
    """An answer Porch gives itself, from a `request` hook: status, extra header
    fields, body, and the cause the error log gets for a 4xx/5xx (nothing is logged
    when it is empty).

    Without `content_type`, the body is a short text (None: Porch's standard body for
    the status) sent as text/plain, or as the Content-Type that `headers` holds (an
    auth service's own answer passed back).  With it, the body is content: bytes or a
    `FileBody`, sent with that Content-Type.  Content-Length and Connection are
    Porch's; a 204 or 304 goes without body, Content-Type or Content-Length
    (RFC 9110 15.3.5, 15.4.5)."""

    __slots__ = ("status", "headers", "body", "cause", "content_type")

    def __init__(self, status: int, body: bytes | FileBody | None = None, headers: Headers | None = None,
                 cause: str = "", content_type: bytes | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = Headers() if headers is None else headers
        self.cause = cause
        self.content_type = content_type


class Context(Protocol):
    """What a policy may read about the exchange it runs in (the server's exchange
    implements it).  Values are as routed: `host` without port, `path` clean."""

    client_ip: str  # the real client (after trusted proxies)
    scheme: bytes  # b"http" or b"https": how the client reached Porch
    host: str  # the host name the request was routed by
    host_header: bytes | None  # the Host (or :authority) as received, port included
    site: str  # the site's first host name, for logs
    method: bytes
    path: bytes  # the clean path ("/a/../b" is "/b")
    query: bytes  # b"" or b"?..."
    version: bytes  # b"1.1", b"1.0", b"2.0"
    # In the response phase: the status the upstream answered; 0 while the answer is
    # Porch's own (whose body never passes the response_body hooks).
    upstream_status: int
    vars: dict[str, Any]  # per request, shared by policies (remote_user, ...)
    host_header: bytes | None  # Host as the client sent it (with its port), None without
    peer_ip: str  # the address that connected: the client, or a trusted proxy
    peer_trusted: bool  # that address is in trusted_proxies
    local_port: bytes  # the port the connection reached Porch on
    # what a trusted proxy said it got (X-Forwarded-For/-Proto/-Host/-Port), else None
    xff: bytes | None
    xf_proto: bytes | None
    xf_host: bytes | None
    xf_port: bytes | None
    request_id: bytes  # X-Request-ID: a trusted proxy's, else Porch's (sent up and back, logged)
    # In the response phase: the chosen upstream's scheme ("http"/"https") and the address
    # and port its connection reached ("", 0 when not known); None before one is chosen.
    upstream_peer: tuple[str, str, int] | None
    content_length: int | None  # the body's declared length (Content-Length), None without one
    # The client's fields that `request` copies, as the flat list itself (Headers.flat):
    # to read, through Headers(ctx.headers), without a copy a request; never to change.
    headers: list[bytes]

    @property
    def request(self) -> RequestHead: ...  # the client's head (fields as received, filtered)

    def log_error(self, policy: str, message: str) -> None: ...


RequestHook = Callable[[Context], "Reply | Awaitable[Reply | None] | None"]


class Policy:
    """A behaviour on requests and responses, for one route (or site).  Subclasses set
    `name` (an entry of ORDER) and override the hooks they need; instances are made at
    load time from validated config and shared by every request of their routes, so
    per-request state goes in ``ctx.vars``, never on the policy."""

    name: ClassVar[str] = ""
    # The request methods the policy acts on; None: every method.  For the others, a
    # chain leaves it out (`Chain.for_method`): a TRACE refusal on every route costs
    # a GET one comparison, not a call (policies/trace.py).
    methods: ClassVar[frozenset[bytes] | None] = None

    def hook(self, phase: str) -> Callable[..., Any]:
        """The callable a chain runs for `phase` (one of PHASES) of this policy: the
        method of that name, unless a policy hands out another that does the same with
        less (a compiled object's method: policies/compress.py)."""
        return getattr(self, phase)

    def request(self, ctx: Context) -> Reply | Awaitable[Reply | None] | None:
        return None

    def upstream_request(self, ctx: Context, head: RequestHead) -> None:
        return None

    def response(self, ctx: Context, head: ResponseHead) -> None:
        return None

    def response_body(self, ctx: Context, data: bytes, end: bool) -> bytes:
        return data

    def log(self, ctx: Context) -> None:
        return None


class Chain:
    """A route's policies, compiled: per phase, the bound hooks of the policies that
    override it, in the phase's order.  Immutable; shared by every request of the route.

    The hooks are those of the policies for every method (`Policy.methods` None); a
    method that some policy is limited to has a chain of its own, with those policies
    too, which `for_method` gives (`methods`: those methods, `method_chains`: theirs)."""

    __slots__ = ("policies", "request", "upstream_request", "response", "response_body", "log",
                 "names", "methods", "method_chains")

    def __init__(self, policies: Sequence[Policy], method: bytes | None = None,
                 general: Chain | None = None) -> None:
        ordered = tuple(sorted(policies, key=_rank))
        self.policies = ordered
        self.names = tuple(p.name for p in ordered)
        active = tuple(p for p in ordered if p.methods is None or (method is not None and method in p.methods))
        self.request = _hooks(active, "request")
        self.upstream_request = _hooks(active, "upstream_request")
        reverse = active[::-1]
        self.response = _hooks(reverse, "response")
        self.response_body = _hooks(reverse, "response_body")
        self.log = _hooks(active, "log")
        if general is not None:  # a method's chain: the general chain's tuples where equal
            _share(self, general)  # (the exchange tests `upstream_request` by identity)
        special = sorted({m for p in ordered if p.methods for m in p.methods}) if method is None else ()
        self.methods = tuple(special) if special else None
        self.method_chains = tuple(Chain(ordered, m, self) for m in special) if special else None

    def for_method(self, method: bytes) -> Chain:
        """The chain that runs for a request with `method`: this one, unless a policy
        acts on that method only.  A comparison per such method (a few instructions
        compiled), no lookup: it runs for every request of a route with one."""
        methods = self.methods
        if methods is not None:
            for i in range(len(methods)):
                m = methods[i]
                if m == method:
                    return self.method_chains[i]
        return self

    def __bool__(self) -> bool:
        return bool(self.policies)

    def __repr__(self) -> str:
        return f"Chain({', '.join(self.names)})"

    def owner(self, hook: Callable[..., object]) -> str:
        """The policy name of a bound hook, for error messages."""
        return getattr(getattr(hook, "__self__", None), "name", "") or "policy"



def _rank(policy: Policy) -> int:
    try:
        return _RANK[policy.name]
    except KeyError:
        raise ValueError(f"policy {type(policy).__name__} has name {policy.name!r}, "
                         f"which is not in pipeline.ORDER: add it there, in its place") from None


def _share(chain: Chain, general: Chain) -> None:
    for phase in PHASES:
        if getattr(chain, phase) == getattr(general, phase):
            setattr(chain, phase, getattr(general, phase))


def _hooks(policies: Sequence[Policy], phase: str) -> tuple[Callable[..., Any], ...]:
    """The bound `phase` methods of the policies that override it (not Policy's no-op)."""
    base = getattr(Policy, phase)
    return tuple(p.hook(phase) for p in policies if getattr(type(p), phase) is not base)


EMPTY = Chain(())  # every route without policies shares it


def compile_chain(policies: Sequence[Policy]) -> Chain:
    """The chain for a route: EMPTY (shared) when there is nothing to run."""
    return Chain(policies) if policies else EMPTY
