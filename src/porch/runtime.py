"""The compiled runtime: what the hot path reads, built once per (re)load.

Everything here is derived from the config model by `config/compile.py`: encoded
header lines, routing tables, balancers.  A reload builds a new Runtime and swaps
one reference; in-flight requests finish on the one they started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from porch.http.forwarding import TrustedProxies
from porch.observability.accesslog import AccessLog
from porch.observability.errorlog import ErrorLog
from porch.routing import HostTable, PathTable
from porch.tls.challenge import Responder
from porch.upstream.pool import Balancer, Target

if TYPE_CHECKING:
    from porch.policies.https import HttpsPhase
    from porch.tls.service import TlsService


@dataclass(eq=False)
class RouteRuntime:
    site: str  # the site's first host name, for logs
    path: str  # the route's prefix, for logs
    balancer: Balancer
    strip: bytes | None  # b"/radicale" when strip_prefix is on
    base_path: bytes  # path of the proxy URL, prepended upstream ("" usually)
    upstream_host: bytes | None
    extra_headers: bytes  # pre-encoded lines added upstream (X-Script-Name ...)
    location_from: tuple[bytes, ...]  # upstream URL prefixes rewritten in Location
    max_body: int | None
    body_timeout: float
    upstream_connect_timeout: float
    upstream_timeout: float
    tunnel_idle_timeout: float


@dataclass(eq=False)
class SiteRuntime:
    name: str
    paths: PathTable[RouteRuntime]
    root_only: RouteRuntime | None = None  # the site's one route, when it is "/"
    challenge: Responder | None = None  # /.well-known/acme-challenge/ (porch.tls.challenge)
    https: HttpsPhase | None = None  # TLS sites: redirect plain HTTP, HSTS (policies/https.py)


@dataclass(eq=False)
class Runtime:
    hosts: HostTable[SiteRuntime]
    trusted: TrustedProxies
    header_timeout: float
    keepalive_timeout: float
    max_header_size: int
    shutdown_timeout: float
    access_log: AccessLog
    error_log: ErrorLog
    targets: tuple[Target, ...] = field(default=())
    scheme: bytes = b"http"
    tls: TlsService | None = None  # None: no site has TLS, nothing listens on https_port
