"""Config model -> Runtime: the only place where config types meet runtime types."""

from __future__ import annotations

import ssl
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from porch._compiled import http2_engine
from porch.config.compile_listeners import acme_hosts, empty_site, listener_hosts
from porch.config.listeners import of as listeners_of
from porch.config.model import Config, Route, Site, UpstreamTarget, UpstreamTLS
from porch.http import location
from porch.http.forwarding import TrustedProxies
from porch.observability.accesslog import AccessLog
from porch.observability.errorlog import ErrorLog, Recent
from porch.observability.stats import PolicyMetrics
from porch.routing import HostTable, PathTable, matcher
from porch.runtime import RouteRuntime, Runtime, SiteRuntime
from porch.pipeline import Policy, compile_chain
from porch.policies import acme_challenge, max_body, registry, strip_prefix, trailing_slash
from porch.policies.forwarding import FORWARDING
from porch.policies.hsts import Hsts
from porch.policies.https import HttpsRedirect
from porch.policies.location_rewrite import LocationRewrite
from porch.policies.trace import REFUSE_TRACE
from porch.storage import FileStorage, Storage
from porch.upstream.pool import Balancer, Target
from porch.upstream.prober import HealthWatcher, probed_addresses
from porch.upstream.sticky import Sticky, cookie_name
from porch.upstream.sticky import secret as sticky_secret
from porch.upstream.tls import client_context

if TYPE_CHECKING:
    from porch.limits.table import CounterTable
    from porch.tls.service import TlsService

# One pool per address and TLS setting, shared by every route using it.
_Targets = dict[tuple[str, str, int, UpstreamTLS | None], Target]


class _Logs:
    """The log files of one load: one AccessLog per (path, format) and one ErrorLog per
    path, shared by the sites and routes naming them; [porch]'s first."""

    def __init__(self, access: AccessLog, error: ErrorLog, access_format: str, level: str,
                 shared: frozenset[str] = frozenset()) -> None:
        self.access = {(access.path, access.format): access}
        self.error = {error.path: error}
        self.default_access = access
        self.default_error = error
        self.routes: list[RouteRuntime] = []  # compiled, in order (their counters: Runtime.routes)
        self.access_format = access_format
        self.level = level
        self.shared = shared  # files several sites write (shared_files)

    def access_log(self, path: str | None, fmt: str | None) -> AccessLog:
        if path is None and fmt is None:
            return self.default_access
        path = path or self.default_access.path
        key = (path, fmt or default_format(path, self.access_format, self.shared))
        if key not in self.access:
            self.access[key] = AccessLog(*key)
        return self.access[key]

    def error_log(self, path: str | None) -> ErrorLog:
        if path is None:
            return self.default_error
        if path not in self.error:
            self.error[path] = ErrorLog(path)
            self.error[path].set_level(self.level)
            self.error[path].recent = self.default_error.recent
        return self.error[path]


def shared_files(config: Config) -> frozenset[str]:
    """The access-log files that routes of more than one site write."""
    sites_of: dict[str, set[str]] = {}
    for site in config.sites:
        for r in site.routes:
            sites_of.setdefault(r.access_log or config.porch.access_log, set()).add(site.name)
    return frozenset(path for path, names in sites_of.items()
                     if len(names) > 1 and path not in ("-", "off"))


def default_format(path: str, fmt: str, shared: frozenset[str]) -> str:
    """[porch]'s access_log_format for `path`: its "combined" (the default) becomes
    "vhost_combined" in a file several sites share, so each line says whose it is (as
    Debian's apache2 writes other_vhosts_access.log); a site's or route's own
    access_log_format is taken as written.  stdout is left as it is."""
    return "vhost_combined" if fmt == "combined" and path in shared else fmt


def compile_config(config: Config, *, access_log: AccessLog | None = None,
                   error_log: ErrorLog | None = None, counters: CounterTable | None = None,
                   ticket_secret: bytes | None = None) -> Runtime:
    """Build the runtime objects for `config` (already validated).  Loads the TLS
    certificates (and makes local-CA ones): ConfigError if a site's files do not load.
    `ticket_secret`: the supervisor's TLS session-ticket secret (tls/tickets.py)."""
    g = config.porch
    error_log = error_log or ErrorLog(g.error_log)
    error_log.set_level(g.error_log_level)
    if error_log.recent is None:  # what the dashboard shows (server/admin/)
        error_log.recent = Recent()
    tls = None
    if any(site.tls != "off" for site in config.sites):
        # Imported here: it brings cryptography (~15 MiB a process) that a Porch
        # serving plain HTTP only never needs.
        from porch.tls.service import build_tls

        tls = build_tls(config, error_log, ticket_secret)
    targets: _Targets = {}
    storage = FileStorage(g.state_dir)
    # counters: the machine's shared table (a worker's, from the supervisor), else
    # the policies that count make this process's own (limits/table.py local_table)
    metrics = PolicyMetrics()
    env = registry.Env(storage=storage, error_log=error_log, counters=counters,
                       metrics=metrics, upstream=partial(_shared_target, targets))
    shared = shared_files(config)
    access_log = access_log or AccessLog(
        g.access_log, default_format(g.access_log, g.access_log_format, shared))
    logs = _Logs(access_log, error_log, g.access_log_format, g.error_log_level, shared)
    listeners = listeners_of(config)
    # the redirect to https:// names the TLS listener's port (443: none)
    https_port = next((l.port for l in listeners if l.kind == "tls"), g.https_port)
    acme_names = acme_hosts(config)
    sites = [(site.hosts, _compile_site(site, targets, env, tls, https_port, logs, acme_names))
             for site in config.sites]
    routes = [r for s in config.sites for r in s.routes]
    for target in targets.values():
        target.error_log = error_log
    hosts = HostTable.build(sites)
    return Runtime(
        hosts=hosts,
        listener_hosts=listener_hosts(config, listeners, sites, hosts, lambda site: empty_site(
            site.name, compile_chain(_site_policies(site, storage, tls, https_port)))),
        trusted=TrustedProxies.parse(g.trusted_proxies),
        # The head arrives before we know the site: the strictest configured
        # header timeout applies (it guards against slowloris, not slow apps).
        header_timeout=min([r.limits.header_timeout for r in routes] or [60.0]),
        keepalive_timeout=g.keepalive_timeout,
        max_header_size=g.max_header_size,
        shutdown_timeout=g.shutdown_timeout,
        send_timeout=g.send_timeout,
        max_concurrent_streams=g.max_concurrent_streams,
        underscores_in_headers=g.underscores_in_headers,
        identity_headers=registry.identity_headers(
            [s.policies for s in config.sites] + [r.policies for r in routes]),
        http2_engine=http2_engine(g.http2_engine),  # the one that runs (validate.py checked it)
        access_log=access_log,
        error_log=error_log,
        targets=tuple(targets.values()),
        tls=tls,
        # Every pooled target: probe results, and drains from the admin API (issue 17)
        health=HealthWatcher(storage, pooled) if (pooled := _pooled(config, targets)) else None,
        access_logs=tuple(logs.access.values()),
        error_logs=tuple(logs.error.values()),
        metrics=metrics,
        routes=tuple(logs.routes),
    )


def _pooled(config: Config, targets: _Targets) -> tuple[Target, ...]:
    """The targets the supervisor's health file may name: those probed, and those in
    a pool of two or more (a drain takes them out of rotation)."""
    probed = probed_addresses(config)
    pools = {t.address for s in config.sites for r in s.routes if len(r.upstreams) > 1 for t in r.upstreams}
    return tuple(t for t in targets.values() if t.address in probed or t.address in pools)


def _compile_site(site: Site, targets: _Targets, env: registry.Env, tls: TlsService | None,
                  https_port: int, logs: _Logs, acme_hosts: frozenset[str] = frozenset()) -> SiteRuntime:
    env = replace(env, site=site.name)
    policies = _site_policies(site, env.storage, tls, https_port)
    if site.listen and site.tls == "off" and acme_hosts.intersection(site.hosts) and not policies:
        # Its name's certificate belongs to the site on the TLS listener, and the CA
        # asks for HTTP-01 on port 80, here: Porch's tokens are answered, the rest
        # go on to this site's upstream (Snikket answers its own).
        policies.append(acme_challenge.AcmeChallenge(env.storage, "upstream"))
    paths = _path_table(site, targets, policies, env, logs)
    only = None  # the site's one route when it is the prefix "/": routed without a lookup
    if len(site.routes) == 1 and not paths.nginx and paths.entries and paths.entries[0][0] == b"/":
        only = paths.entries[0][1]
    # the site's own chain runs for a path no route takes: the slash redirect is there
    # only (policies/trailing_slash.py), never on a route's chain
    slash = trailing_slash.for_paths(paths.slashless)
    return SiteRuntime(name=site.name, paths=paths, root_only=only,
                       chain=compile_chain(policies + registry.build(site.policies, env)
                                           + ([slash] if slash is not None else [])))


def _path_table(site: Site, targets: _Targets, policies: list[Policy], env: registry.Env,
                logs: _Logs) -> PathTable:
    """The site's routes by matcher kind (routing.py: nginx's location order), each
    with its own log files or its site's."""
    prefixes: dict[bytes, RouteRuntime] = {}
    exact: dict[bytes, RouteRuntime] = {}
    patterns = []
    stops = set()
    error_log = logs.error_log(site.error_log)
    for r in site.routes:
        compiled = _compile_route(site, r, targets, policies, env,
                                  logs.access_log(r.access_log, r.access_log_format), error_log)
        logs.routes.append(compiled)
        m = r.matcher
        if m is None:
            prefixes[r.path.encode()] = compiled
            if r.priority_prefix:
                stops.add(r.path.encode())
        elif m.kind == "exact":
            exact[m.pattern.encode()] = compiled
        else:
            patterns.append((matcher(m.kind, m.pattern, m.case), compiled))
    return PathTable.build(prefixes, exact, tuple(patterns), frozenset(stops))


def _site_policies(site: Site, storage: Storage, tls: TlsService | None, https_port: int) -> list[Policy]:
    """The policies every request of `site` meets (pipeline.ORDER puts them in place)."""
    policies: list[Policy] = []
    responder = acme_challenge.for_site(site, storage)
    if responder is not None:
        policies.append(responder)
    if tls is not None and site.key_path in tls.slots:
        if site.redirect_http:
            policies.append(HttpsRedirect(tls.slots[site.key_path], https_port))
        if site.hsts:
            policies.append(Hsts(site.hsts.value))
    return policies


def _compile_route(site: Site, route: Route, targets: _Targets, policies: list[Policy],
                   env: registry.Env, access_log: AccessLog | None = None,
                   error_log: ErrorLog | None = None) -> RouteRuntime:
    pool = []
    for spec in route.upstreams:
        tls = route.upstream_tls if spec.scheme == "https" else None
        key = (spec.scheme, spec.host, spec.port, tls)
        if key not in targets:
            targets[key] = Target(spec, *_tls_for(tls, targets))
        pool.append(targets[key])
    strip = strip_prefix.for_route(route.path, route.strip_prefix)
    own: list[Policy] = [FORWARDING] if strip is None else [strip, FORWARDING]
    # the model's request checks as policies (issue 12): TRACE refused unless allowed
    # (acting on TRACE only: other methods' chains leave it out), the body limit
    if not route.allow_trace:
        own.append(REFUSE_TRACE)
    limit = max_body.for_route(route.limits.max_body)
    if limit is not None:
        own.append(limit)
    base_path = route.upstreams[0].path.encode() if route.upstreams else b""
    upstream_host = route.upstream_host.encode() if route.upstream_host else None
    return _plain_upstream(RouteRuntime(
        site=site.name,
        path=route.path,
        balancer=_balancer(route, tuple(pool), env.storage),
        base_path=base_path,
        upstream_host=upstream_host,
        proxy_protocol=route.upstream_proxy_protocol,
        location_rewrite=LocationRewrite(strip.prefix if strip is not None else None, base_path,
                                         _upstream_origins(route), upstream_host),
        max_body=route.limits.max_body,
        body_timeout=route.limits.body_timeout,
        upstream_connect_timeout=route.limits.upstream_connect_timeout,
        upstream_timeout=route.limits.upstream_timeout,
        tunnel_idle_timeout=route.limits.tunnel_idle_timeout,
        chain=compile_chain(policies + own + registry.build(route.policies, env)),
        access_log=access_log,
        error_log=error_log,
    ))


def _plain_upstream(runtime: RouteRuntime) -> RouteRuntime:
    """Mark a route whose only upstream_request hook is the forwarding headers'."""
    hooks = runtime.chain.upstream_request
    runtime.plain_upstream = hooks if hooks == (FORWARDING.upstream_request,) else None
    return runtime


def _balancer(route: Route, pool: tuple[Target, ...], storage: Storage) -> Balancer:
    p = route.pool
    mode, sticky = p.balance, None
    if mode == "cookie" and len(pool) > 1:
        sticky = Sticky(cookie_name(route.path), sticky_secret(storage), [t.address for t in pool])
    elif mode == "cookie":
        mode = "round_robin"  # one target: no cookie to set
    return Balancer(pool, tuple(t.weight for t in route.upstreams), mode=mode, max_fails=p.max_fails,
                    fail_timeout=p.fail_timeout, retries=p.retries, probed=p.health is not None,
                    sticky=sticky)


def _shared_target(targets: _Targets, spec: UpstreamTarget) -> Target:
    """The Target (and keep-alive pool) of `spec`'s address, for a policy's subrequests:
    the one a route proxying there uses (https: with the default, verifying, TLS)."""
    tls = UpstreamTLS() if spec.scheme == "https" else None
    key = (spec.scheme, spec.host, spec.port, tls)
    if key not in targets:
        targets[key] = Target(spec, *_tls_for(tls, targets))
    return targets[key]


def _tls_for(tls: UpstreamTLS | None, targets: _Targets) -> tuple[ssl.SSLContext | None, str | None]:
    """The SSLContext (one per setting: shared with targets already built) and server name."""
    if tls is None:
        return None, None
    same_files = replace(tls, server_name=None)
    for (_, _, _, other), target in targets.items():
        if other is not None and replace(other, server_name=None) == same_files:
            return target.ssl, tls.server_name
    ctx = client_context(verify=tls.verify, ca=tls.ca, cert=tls.cert, key=tls.key)
    return ctx, tls.server_name


def _upstream_origins(route: Route) -> tuple[bytes, ...]:
    """The origins (lowercase scheme://authority) of a route's proxy URLs, as a Location
    header may spell them: rewritten to the client's on every route (nginx's
    proxy_redirect default; server/proxy.py adds the Host sent and the address reached)."""
    out: list[bytes] = []
    for t in route.upstreams:
        out += location.authorities(t.scheme, t.host, t.port)
    return tuple(out)
