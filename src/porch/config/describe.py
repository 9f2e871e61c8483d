"""What `porch check` prints for a good config: the settings that matter, then each
site with its hosts and routes.

The text is stable (the same config always gives the same text, so golden tests can
compare it whole) and compact: limits appear only where they differ from the model's
defaults, and sizes and durations are spelled as the config file would spell them.
"""

from __future__ import annotations

from dataclasses import fields
from ipaddress import ip_address

from porch.config.model import Config, Global, Limits, Route, Site, TlsFiles, UpstreamTLS, Webroot
from porch.config.units import format_duration, format_size
from porch.config.upstreams import pool_text, target_text
from porch.config.workers import worker_count
from porch.policies import registry

_DEFAULT_LIMITS = Limits()
_STREAMS = {"-": "stdout", "off": "off"}


def describe(config: Config) -> str:
    """The `porch check` report for `config`, without a trailing newline.

    It has no header line: the caller says which file is valid, then prints this.
    """
    lines = _aligned(_settings(config.porch, config.sites))
    if config.streams:
        lines += ["", *_streams(config)]
    for site in config.sites:
        lines += ["", *_site(site, config.porch.state_dir)]
    return "\n".join(lines)


def _streams(config: Config) -> list[str]:
    """The [[stream]] entries, in the order they are tried (config/streams.py)."""
    lines = [f"streams on port {config.porch.https_port}, first match wins, before the sites:"]
    for stream in config.streams:
        if stream.protocol == "tls":
            match = [f"sni {', '.join(stream.sni)}"] if stream.sni else []
            match += [f"alpn {', '.join(stream.alpn)}"] if stream.alpn else []
            what = "tls " + " and ".join(match) if match else "any tls"
        else:
            what = stream.protocol + (" (or a client silent for 2s)" if stream.protocol == "ssh" else "")
        notes = [f"proxy protocol {stream.proxy_protocol}"] if stream.proxy_protocol else []
        notes.append(f"idle {format_duration(stream.idle_timeout)}")
        lines.append(f"  {stream.key_path} {what} -> passthrough {stream.target} ({', '.join(notes)})")
    return lines


def _settings(porch: Global, sites: tuple[Site, ...]) -> list[tuple[str, str]]:
    """The global settings as (label, value) pairs, in a fixed order."""
    listen = [f"http on {_addresses(porch.bind, porch.http_port)}"]
    if any(site.tls != "off" for site in sites):  # nothing listens on https_port otherwise
        listen.append(f"https on {_addresses(porch.bind, porch.https_port)}")
    access = _STREAMS.get(porch.access_log, porch.access_log)
    if porch.access_log != "off":
        access += f" ({porch.access_log_format})"
    settings = [
        ("listen", "; ".join(listen)),
        ("workers", _workers(porch.workers)),
        ("access log", access),
        ("error log", ("stderr" if porch.error_log == "-" else porch.error_log)
         + ("" if porch.error_log_level == "info" else f" (level {porch.error_log_level})")),
        ("trusted proxies", ", ".join(porch.trusted_proxies) or "none"),
    ]
    if porch.accept_proxy_protocol:
        settings.append(("proxy protocol from", ", ".join(porch.accept_proxy_protocol)))
    settings += [
        ("max header size", format_size(porch.max_header_size)),
        ("keep-alive", _duration_or_off(porch.keepalive_timeout)),
        ("send timeout", format_duration(porch.send_timeout)),
        ("shutdown", f"drain for {format_duration(porch.shutdown_timeout)}"),
        ("reload", f"old workers drain for {format_duration(porch.drain_timeout)}"),
        ("state dir", porch.state_dir),
    ]
    if porch.max_connections is not None or porch.max_connections_per_client is not None:
        limits = [f"{porch.max_connections} in all" if porch.max_connections else "",
                  f"{porch.max_connections_per_client} per client" if porch.max_connections_per_client else ""]
        settings.append(("max connections", ", ".join(x for x in limits if x) + " (refused at accept)"))
    if porch.underscores_in_headers:
        settings.append(("underscores in headers", "passed (names Porch sets are dropped in any spelling)"))
    if porch.email:
        settings.append(("email", porch.email))
    if any(site.tls == "auto" for site in sites):
        root = f" (trusting {porch.acme_ca_root})" if porch.acme_ca_root else ""
        settings.append(("acme ca", porch.acme_ca + root))
        settings.append(("acme challenge", _CHALLENGE[porch.acme_challenge_type]))
    if porch.on_certificate:
        settings.append(("on certificate", porch.on_certificate))
    if any(site.tls != "off" for site in sites):
        ciphers = porch.tls_ciphers or "Mozilla intermediate"
        settings.append(("tls", f"TLS {', '.join(porch.tls_protocols)}; ciphers {ciphers}"))
        if porch.http2:
            settings.append(("http/2", f"on (ALPN h2), {porch.max_concurrent_streams} streams per connection"))
        else:
            settings.append(("http/2", "off (ALPN http/1.1 only)"))
    return settings


def _site(site: Site, state_dir: str) -> list[str]:
    hosts = ", ".join(site.hosts) if site.hosts else "* (catch-all)"
    width = max((len(route.path) for route in site.routes), default=0)
    lines = [f"{site.key_path} {hosts}"]
    if site.listen:
        lines.append(f"  listen {', '.join(listener.where for listener in site.listen)} only")
    if site.tls != "off":
        lines.append(f"  tls {_tls(site, state_dir)}")
    lines += _acme(site)
    for route in site.routes:
        lines += _route(route, width)
    return lines


def _acme(site: Site) -> list[str]:
    """The site's ACME settings that differ from the defaults, one line each."""
    out = []
    if isinstance(site.acme_challenge, Webroot):
        out.append(f"  acme challenge: Porch's, else files in {site.acme_challenge.root}")
    elif site.acme_challenge == "upstream":
        out.append("  acme challenge: Porch's, else passed to the upstream")
    if site.on_certificate:
        out.append(f"  on certificate: {site.on_certificate}")
    for b in site.bundles:
        group = f" group {b.group}" if b.group else ""
        out.append(f"  bundle {b.path} = {' + '.join(b.contents)} (mode {b.mode:04o}{group})")
    return out


def _tls(site: Site, state_dir: str) -> str:
    """Where the site's certificate comes from, and what plain HTTP and hsts do."""
    certs = f"{state_dir.rstrip('/')}/certs/{site.name}/"
    if isinstance(site.tls, TlsFiles):
        source = f"files: {site.tls.cert}, {site.tls.key} (re-read when they change)"
        if not site.hosts:
            source += "; served for names no site has"
    elif site.tls == "auto":
        source = f"auto: ACME certificate in {certs}"
    else:
        source = f"internal: local CA certificate in {certs}"
    notes = ["http redirects to https" if site.redirect_http else "http served too"]
    if site.hsts is not None:
        notes.append(f"hsts {site.hsts.value}")
    return f"{source}; {'; '.join(notes)}"


def _route(route: Route, width: int) -> list[str]:
    """The route's line, and a second one with its upstream TLS if it has https:// upstreams."""
    upstreams = ", ".join(target_text(target) for target in route.upstreams) or "no upstream (root)"
    notes = ["strip_prefix"] if route.strip_prefix else []
    if route.priority_prefix:
        notes.append("priority prefix: regex and match routes do not take its paths (nginx ^~)")
    if route.allow_trace:
        notes.append("allow_trace")
    if route.upstream_proxy_protocol:
        notes.append(f"PROXY v{route.upstream_proxy_protocol} to the upstream, no keep-alive")
    if route.upstream_host:
        notes.append(f"upstream_host {route.upstream_host}")
    notes += [f"{key} {registry.REGISTRY[key].describe(value)}" for key, value in route.policies]
    notes += _limits(route.limits)
    tail = f"  ({', '.join(notes)})" if notes else ""
    lines = [f"  {route.path.ljust(width)} -> {upstreams}{tail}"]
    https = [target.host for target in route.upstreams if target.scheme == "https"]
    if https:
        lines.append(f"  {' ' * width}    upstream tls: {_upstream_tls(route.upstream_tls, https)}")
    pool = pool_text(route) if route.upstreams else ""
    if pool:
        lines.append(f"  {' ' * width}    pool: {pool}")
    return lines


def _upstream_tls(tls: UpstreamTLS, hosts: list[str]) -> str:
    """What the https:// connections of a route do: verification, client cert, SNI."""
    if not tls.verify:
        remote = [host for host in hosts if not _is_loopback(host)]
        # Snikket's guide: "REMOVE THIS IF YOU CHANGE `localhost` TO ANYTHING ELSE".
        warning = f", and {remote[0]} is not this machine: a host between could pose as it" if remote else ""
        parts = [f"verify off (any certificate accepted{warning})"]
    elif tls.ca:
        parts = [f"verify with ca {tls.ca}"]
    else:
        parts = ["verify with the system CAs"]
    if tls.cert:
        parts.append(f"client cert {tls.cert}" + (f" key {tls.key}" if tls.key else ""))
    names = sorted({tls.server_name} if tls.server_name else set(hosts))
    sni = [name for name in names if not _is_ip(name)]
    parts.append(f"sni {', '.join(sni)}" if sni else "no sni (IP address)")
    if tls.server_name and tls.verify:
        parts[-1] += " (the name checked)"
    parts.append("alpn http/1.1")
    return "; ".join(parts)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 section 6.3
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ip_address(name)
    except ValueError:
        return False
    return True


def _limits(limits: Limits) -> list[str]:
    """Each limit that differs from the model default, as "name value"."""
    out = []
    for field in fields(Limits):
        value = getattr(limits, field.name)
        if value == getattr(_DEFAULT_LIMITS, field.name):
            continue
        if field.name == "max_body":
            out.append(f"max_body {'off' if value is None else format_size(value)}")
        else:
            out.append(f"{field.name} {format_duration(value)}")
    return out


def _workers(workers: int | str) -> str:
    if workers == "auto":
        return f"auto ({worker_count(workers)} on this machine)"
    return str(workers)


def _duration_or_off(seconds: float) -> str:
    return format_duration(seconds) if seconds else "off"


def _addresses(bind: tuple[str, ...], port: int) -> str:
    return ", ".join(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in bind)


def _aligned(pairs: list[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in pairs)
    return [f"  {label.ljust(width)}  {value}" for label, value in pairs]


_CHALLENGE = {
    "auto": "HTTP-01 on http_port, TLS-ALPN-01 on https_port when HTTP-01 fails",
    "http-01": "HTTP-01 on http_port only",
    "tls-alpn-01": "TLS-ALPN-01 on https_port only",
}
