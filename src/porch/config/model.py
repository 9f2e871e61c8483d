"""The typed configuration model: the one truth every config front-end produces.

Front-ends (porch.toml today, nginx and Apache subsets later) build these frozen
objects; `config/compile.py` turns them into runtime objects.  Nothing at request
time reads this model.  Durations are seconds (float), sizes are bytes (int),
`None` means "unlimited" / "not set".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

AccessLogFormat = Literal["combined", "vhost_combined", "json"]


@dataclass(frozen=True)
class UpstreamTarget:
    """One upstream server: scheme, host and port taken from a `proxy` URL."""

    scheme: str  # "http" or "https"
    host: str  # a name (resolved when connecting) or an IP literal
    port: int
    path: str = ""  # a base path from the URL ("http://x:1/app" -> "/app"), "" if none
    weight: int = 1  # `{ url = ..., weight = 5 }`: its share in the route's balancing

    @property
    def address(self) -> str:
        """scheme://host:port: what health state and pools are keyed by (not the path)."""
        return f"{self.scheme}://{self.authority}"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


@dataclass(frozen=True)
class Limits:
    """Per-route request limits and timeouts (site keys a route may override)."""

    max_body: int | None = None  # bytes; None = unlimited (nginx default is 1M; ours is off)
    header_timeout: float = 60.0  # nginx client_header_timeout 60s
    body_timeout: float = 60.0  # nginx client_body_timeout 60s: between two reads
    upstream_connect_timeout: float = 60.0  # nginx proxy_connect_timeout 60s
    upstream_timeout: float = 60.0  # nginx proxy_read_timeout 60s: between two reads
    # A WebSocket tunnel with no byte either way for this long is closed.  Apart from
    # upstream_timeout: behind nginx, proxy_read_timeout 60s cuts idle sockets, which
    # guides work around per location (LiveKit: 300s); Caddy has no default cut at all.
    tunnel_idle_timeout: float = 3600.0


@dataclass(frozen=True)
class UpstreamTLS:
    """How Porch talks TLS to `https://` upstreams (a site key a route may override).

    nginx's proxy_ssl_* family, with safe defaults: the certificate is verified (nginx's
    proxy_ssl_verify is off by default; Caddy verifies) and SNI is sent (nginx's
    proxy_ssl_server_name is off by default).  Paths are absolute, resolved at load.
    """

    verify: bool = True  # proxy_ssl_verify; False accepts any certificate (Snikket's self-signed 5443)
    ca: str | None = None  # proxy_ssl_trusted_certificate: trust these, not the system store
    cert: str | None = None  # proxy_ssl_certificate: client certificate for mutual TLS
    key: str | None = None  # proxy_ssl_certificate_key
    server_name: str | None = None  # proxy_ssl_name: SNI and the name checked; None = the URL's host


# How a route's targets are chosen (config/upstreams.py reads them, upstream/balance.py decides).
Balance = Literal["round_robin", "least_conn", "ip_hash", "uri_hash", "random_two", "cookie"]


@dataclass(frozen=True)
class HealthCheck:
    """`health = { path = "/health", ... }`: active probes from the supervisor
    (upstream/prober.py).  `expect` holds status ranges, inclusive: "2xx" is (200, 299)."""

    path: str = "/health"
    interval: float = 5.0
    timeout: float = 2.0
    expect: tuple[tuple[int, int], ...] = ((200, 299),)
    rise: int = 2  # consecutive good probes that bring a down target back
    fall: int = 3  # consecutive bad probes that take an up target out


@dataclass(frozen=True)
class Pool:
    """How a route balances over its upstreams, when it counts one as failed, and
    how often it tries another (nginx's upstream block and proxy_next_upstream)."""

    balance: Balance = "round_robin"
    max_fails: int = 1  # nginx max_fails=1; 0: never taken out by failures
    fail_timeout: float = 10.0  # nginx fail_timeout=10s: the window, and the time out
    retries: int = 1  # other targets tried after a failed one (proxy_next_upstream_tries)
    health: HealthCheck | None = None


@dataclass(frozen=True)
class Matcher:
    """How a route other than a prefix one matches the path (routing.py: nginx's
    location order): "exact" (nginx `=`), "regex" (`~`, or `~*` when not `case`),
    "glob" (`match = "*.{css,js}"`)."""

    kind: str
    pattern: str
    case: bool = True


@dataclass(frozen=True)
class Route:
    """A path matcher on a site and where it goes."""

    # The prefix, always starting with "/"; for a `matcher` route, its label in
    # nginx's words ("= /50x.html", "~* \\.png$", "match *.css"), for logs and messages.
    path: str
    upstreams: tuple[UpstreamTarget, ...]  # () for a static-only route (root)
    matcher: Matcher | None = None
    priority_prefix: bool = False  # priority = "prefix": wins over regex routes (nginx ^~)
    strip_prefix: bool = False
    upstream_host: str | None = None  # Host sent upstream; None = the client's Host
    allow_trace: bool = False  # TRACE passed upstream; else 405 (cross-site tracing)
    # A PROXY protocol header (1 or 2) before each request on a connection of its own:
    # the upstream learns the client's address (HAProxy's send-proxy); 0 = none.
    upstream_proxy_protocol: int = 0
    limits: Limits = field(default_factory=Limits)
    # Policy keys (policies/registry.py) merged from [porch], the site and the route:
    # (key, its config value), in the registry's order.
    policies: tuple[tuple[str, Any], ...] = ()
    upstream_tls: UpstreamTLS = field(default_factory=UpstreamTLS)  # for https:// upstreams
    pool: Pool = field(default_factory=Pool)
    key_path: str = ""  # where it came from, for messages: "site[1].route[0]"
    # Its own access log (OpenTalk's access_log per server), the site's if it has one;
    # None: [porch]'s.  The format None: [porch]'s access_log_format.
    access_log: str | None = None
    access_log_format: AccessLogFormat | None = None


@dataclass(frozen=True)
class Webroot:
    """`acme_challenge = { webroot = "/var/www/letsencrypt" }`: challenge files another
    ACME client (certbot --webroot) writes under `root`/.well-known/acme-challenge/."""

    root: str


@dataclass(frozen=True)
class Bundle:
    """A file written after each issuance for a daemon that reads one PEM file
    (Icecast's bundle.pem): the parts in order, with its mode and group."""

    path: str
    contents: tuple[str, ...] = ("fullchain", "key")  # of "fullchain", "cert", "chain", "key"
    mode: int = 0o600
    group: str | None = None


# ACME directory URLs: `acme_ca` takes a URL or one of these names.
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class TlsFiles:
    """`tls = { cert = "...", key = "..." }`: a certificate chain and key on disk
    (certbot's fullchain.pem and privkey.pem), re-read when they change.  `chain`:
    the intermediates in a file of their own (Apache's SSLCertificateChainFile, an
    older certbot's chain.pem), appended to `cert` when the context is built."""

    cert: str
    key: str
    chain: str | None = None


# "auto": ACME (files written by the certificate manager under state_dir);
# "internal": Porch's local CA; "off": plain HTTP only.
TlsMode = Literal["auto", "internal", "off"]


@dataclass(frozen=True)
class Hsts:
    """Strict-Transport-Security (RFC 6797) sent on HTTPS responses."""

    max_age: int  # seconds
    include_subdomains: bool = False
    preload: bool = False

    @property
    def value(self) -> str:
        text = f"max-age={self.max_age}"
        if self.include_subdomains:
            text += "; includeSubDomains"
        if self.preload:
            text += "; preload"
        return text


# "plain": HTTP; "tls": HTTPS (Porch's TLS, or a stream's: config/streams.py).
ListenerKind = Literal["plain", "tls"]


@dataclass(frozen=True)
class Listener:
    """Where Porch accepts connections (config/listeners.py derives them from
    [porch]): the kind says what a connection speaks, whatever the port number."""

    address: str
    port: int
    kind: ListenerKind = "plain"

    @property
    def where(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Site:
    """A virtual host: its names and its routes (a site-level `proxy` is route "/")."""

    hosts: tuple[str, ...]  # lowercased; "*.example.org" wildcards; () = catch-all
    routes: tuple[Route, ...]
    tls: TlsMode | TlsFiles = "off"  # the front-end resolves the default from the hosts
    redirect_http: bool = True  # plain HTTP answers a redirect to https:// (when tls is on)
    hsts: Hsts | None = None
    key_path: str = ""
    # ACME (porch.tls): who answers /.well-known/acme-challenge/ besides Porch's own
    # solver ("porch": nobody; "upstream": the site's upstream; a Webroot: files)
    acme_challenge: str | Webroot = "porch"
    on_certificate: str | None = None  # command run after each issuance; None = [porch]'s
    bundles: tuple[Bundle, ...] = ()
    policies: tuple[tuple[str, Any], ...] = ()  # [porch]'s and the site's: for paths no route takes
    # The listeners it serves on (`listen`); () = every one.
    listen: tuple[Listener, ...] = ()
    error_log: str | None = None  # its requests' error lines go there, not to [porch]'s

    @property
    def name(self) -> str:
        return self.hosts[0] if self.hosts else "*"


@dataclass(frozen=True)
class Global:
    """The `[porch]` table."""

    http_port: int = 80
    https_port: int = 443
    bind: tuple[str, ...] = ("0.0.0.0", "::")
    trusted_proxies: tuple[str, ...] = ()  # CIDR strings, normalised
    # Peers whose connections start with a PROXY v1/v2 header (sslh, HAProxy in front):
    # its address is the client's.  CIDR strings, normalised; () = nobody.
    accept_proxy_protocol: tuple[str, ...] = ()
    workers: int | Literal["auto"] = 1
    access_log: str = "-"  # path, "-" = stdout, "off"
    access_log_format: AccessLogFormat = "combined"
    error_log: str = "-"  # path, "-" = stderr
    state_dir: str = "/var/lib/porch"
    max_header_size: int = 16 * 1024  # request line + headers; nginx 4x8k, node 16k
    keepalive_timeout: float = 75.0  # idle client keep-alive; nginx 75s
    shutdown_timeout: float = 30.0  # drain time on SIGTERM
    # How long workers replaced by a reload may finish their requests; nginx waits
    # for ever unless worker_shutdown_timeout is set, which leaves old workers behind.
    drain_timeout: float = 30.0
    email: str | None = None
    acme_ca: str = LETSENCRYPT  # ACME directory URL
    acme_ca_root: str | None = None  # PEM file trusted for acme_ca (a private CA: pebble)
    # How the CA validates: "http-01" on http_port, "tls-alpn-01" (RFC 8737) on
    # https_port, or "auto": HTTP-01, and TLS-ALPN-01 at once when HTTP-01 fails
    # (port 80 closed by a firewall); the HTTPS listener answers acme-tls/1 unless "http-01".
    acme_challenge_type: Literal["auto", "http-01", "tls-alpn-01"] = "auto"
    on_certificate: str | None = None  # deploy hook for sites without their own
    tls_protocols: tuple[str, ...] = ("1.2", "1.3")
    tls_ciphers: str | None = None  # OpenSSL cipher list for TLS 1.2; None = Mozilla intermediate
    http2: bool = True  # ALPN h2 on the HTTPS listener (nginx `http2 on`, Caddy's default)
    # SETTINGS_MAX_CONCURRENT_STREAMS: nginx http2_max_concurrent_streams 128, Go 250,
    # RFC 9113 6.5.2 recommends no less than 100.
    max_concurrent_streams: int = 100
    # What speaks HTTP/2: "nghttp2" (libnghttp2, compiled in when its header was
    # there at build time), "h2" (pure Python), "auto" (nghttp2 where built, else h2: _compiled.py).
    http2_engine: str = "auto"
    # A client that reads nothing of a response for this long is dropped (nginx send_timeout 60s).
    send_timeout: float = 60.0
    # Request header names with "_" are passed (nginx underscores_in_headers, off by
    # default); names Porch protects are dropped in any spelling all the same.
    underscores_in_headers: bool = False
    error_log_level: Literal["debug", "info", "warn", "error"] = "info"  # the least written
    # Connections refused at accept over these (server/limits.py); None: no limit.
    max_connections: int | None = None
    max_connections_per_client: int | None = None
    # The admin API and dashboard (server/admin/): "host:port", or a unix socket path
    # (starts with "/"); None: off.  Over TCP every request needs the token, given
    # here, in admin_token_file (absolute path), or in $PORCH_ADMIN_TOKEN.
    admin: str | None = None
    admin_token: str | None = None
    admin_token_file: str | None = None


# `[[stream]] protocol`: "tls" (the ClientHello's sni/alpn decide) or a plain
# protocol recognised by its first bytes (mux/probes.py).
StreamProtocol = Literal["tls", "xmpp", "ssh", "http", "openvpn", "any"]


@dataclass(frozen=True)
class Stream:
    """A `[[stream]]`: connections on the HTTPS port passed through to `passthrough`
    as raw TCP (sslh's job), matched in file order before Porch's own sites.

    A TLS connection matches when its server name is one of `sni` (exact or
    "*.example.org", any depth below) if set, and it offers one of `alpn` if set.
    `protocol` other than "tls" matches plain first bytes instead."""

    passthrough: tuple[str, int]  # host (name or IP literal), port
    sni: tuple[str, ...] = ()  # lowercased
    alpn: tuple[str, ...] = ()
    protocol: StreamProtocol = "tls"
    proxy_protocol: Literal["v1", "v2"] | None = None  # a PROXY header to the target
    # No byte either way for this long closes the connection (sslh has none; nginx
    # stream's proxy_timeout is 10m; XMPP clients ping every few minutes).
    idle_timeout: float = 3600.0
    connect_timeout: float = 10.0
    key_path: str = ""

    @property
    def target(self) -> str:
        host, port = self.passthrough
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Config:
    porch: Global
    sites: tuple[Site, ...]
    source: str = "<memory>"
    streams: tuple[Stream, ...] = ()
    # Where connections are accepted (config/listeners.py); derived from [porch] by the
    # loader: () only in a Config built by hand (then http_port on each bind address).
    listeners: tuple[Listener, ...] = ()
    # What a front-end accepted but a person should hear about, one line each, with
    # the key path and the fix, like ConfigError's problems (config/checks.py).
    warnings: tuple[str, ...] = ()
