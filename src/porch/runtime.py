"""The compiled runtime: what the hot path reads, built once per (re)load.

Everything here is derived from the config model by `config/compile.py`: encoded
header lines, routing tables, balancers.  A reload builds a new Runtime and swaps
one reference; in-flight requests finish on the one they started with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from porch.http.forwarding import TrustedProxies
from porch.observability.accesslog import AccessLog
from porch.observability.errorlog import ErrorLog
from porch.observability.stats import PolicyMetrics, RouteStats
from porch.pipeline import EMPTY, Chain
from porch.routing import HostTable, PathTable
from porch.upstream.pool import Balancer, Target

if TYPE_CHECKING:
    from porch.policies.location_rewrite import LocationRewrite
    from porch.upstream.prober import HealthWatcher
    from porch.tls.service import TlsService


class RouteRuntime:
    """One route of a site, compiled.  Fields typed in runtime.pxd when compiled."""

    def __init__(
        self,
        *,
        site: str,
        path: str,
        balancer: Balancer,
        base_path: bytes,
        upstream_host: bytes | None,
        location_rewrite: LocationRewrite,
        max_body: int | None,
        body_timeout: float,
        upstream_connect_timeout: float,
        upstream_timeout: float,
        tunnel_idle_timeout: float,
        proxy_protocol: int = 0,
        chain: Chain = EMPTY,
        access_log: AccessLog | None = None,
        error_log: ErrorLog | None = None,
    ) -> None:
        self.site = site  # the site's first host name, for logs
        self.path = path  # the route's prefix, for logs
        self.balancer = balancer
        self.base_path = base_path  # path of the proxy URL, prepended upstream ("" usually)
        self.upstream_host = upstream_host
        # the upstream's own URLs in Location and Refresh (policies/location_rewrite.py)
        self.location_rewrite = location_rewrite
        self.max_body = max_body  # counted as a body without Content-Length arrives (server/proxy.py)
        self.body_timeout = body_timeout
        self.upstream_connect_timeout = upstream_connect_timeout
        self.upstream_timeout = upstream_timeout
        self.tunnel_idle_timeout = tunnel_idle_timeout
        self.proxy_protocol = proxy_protocol  # 1, 2: a PROXY header, connections not shared
        self.chain = chain  # the route's policies with its site's (pipeline.py)
        # chain.upstream_request when its only hook is the forwarding headers' (set by
        # compile.py): the exchange then calls policies/forwarding.py `fields` directly
        self.plain_upstream: tuple | None = None
        # Where its requests are logged (its own, its site's or [porch]'s: compile.py);
        # None only in tests that build a route by hand: the runtime's then.
        self.access_log = access_log
        self.error_log = error_log
        self.stats = RouteStats(site, path)  # its counters (observability/stats.py)


class SiteRuntime:
    """One site: its routes, and the policies of a request that matches none of them."""

    def __init__(
        self,
        *,
        name: str,
        paths: PathTable[RouteRuntime],
        root_only: RouteRuntime | None = None,
        chain: Chain = EMPTY,
    ) -> None:
        self.name = name
        self.paths = paths
        self.root_only = root_only  # the site's one route, when it is "/"
        # The site's own policies (ACME, the move to HTTPS, HSTS): every route's chain
        # has them too; this one runs for a path that no route takes (then 404).
        self.chain = chain


class Runtime:
    """Everything one (re)load serves with."""

    def __init__(
        self,
        *,
        hosts: HostTable[SiteRuntime],
        trusted: TrustedProxies,
        header_timeout: float,
        keepalive_timeout: float,
        max_header_size: int,
        shutdown_timeout: float,
        send_timeout: float = 60.0,
        max_concurrent_streams: int = 100,
        underscores_in_headers: bool = False,
        identity_headers: frozenset[bytes] = frozenset(),
        http2_engine: str = "auto",
        access_log: AccessLog,
        error_log: ErrorLog,
        targets: tuple[Target, ...] = (),
        scheme: bytes = b"http",
        tls: TlsService | None = None,
        health: HealthWatcher | None = None,
        listener_hosts: dict[tuple[str, int], HostTable[SiteRuntime]] | None = None,
        access_logs: tuple[AccessLog, ...] = (),
        error_logs: tuple[ErrorLog, ...] = (),
        metrics: PolicyMetrics | None = None,
        routes: tuple[RouteRuntime, ...] = (),
    ) -> None:
        self.hosts = hosts  # every site: for a connection whose listener has no table below
        # (address, port) of a listener -> the sites it serves (a site's `listen`); the
        # same table as `hosts` while no site names its listeners
        self.listener_hosts = listener_hosts or {}
        self.trusted = trusted
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_header_size = max_header_size
        self.shutdown_timeout = shutdown_timeout
        self.send_timeout = send_timeout
        self.max_concurrent_streams = max_concurrent_streams  # HTTP/2 (server/h2conn.py)
        self.underscores_in_headers = underscores_in_headers  # server/client.py
        # Identity fields the policies set (a user_header): dropped from every client
        # request like http/forwarding.IDENTITY.  server/client.py makes this load's
        # table of request header names from them, once, and its memo of names seen.
        self.identity_headers = identity_headers
        self.header_kinds: object = None
        self.header_seen: dict[bytes, int] = {}
        self.http2_engine = http2_engine  # "nghttp2" or "h2" (server/h2engine.py)
        self.access_log = access_log
        self.error_log = error_log
        self.targets = targets
        self.scheme = scheme
        self.tls = tls  # None: no site has TLS, nothing listens on https_port
        self.health = health  # probe results from the supervisor (upstream/prober.py); None: no probes
        # Every log file open, [porch]'s first: flushed by the sweeper, reopened on SIGUSR1.
        self.access_logs = access_logs or (access_log,)
        self.error_logs = error_logs or (error_log,)
        self.stats = RouteStats("-", "-")  # requests that reached no route (400, 404 ...)
        self.metrics = metrics or PolicyMetrics()  # policies' counters (registry.Env.metrics)
        self.routes = routes  # every route, for their counters (server/snapshot.py)
