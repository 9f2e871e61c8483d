"""`porch check --dump`: the effective model as porch.toml text.

Every default is written out, each route carries what it inherits from its site and
from [porch] (limits, pool, upstream TLS, policies), and durations and sizes are
spelled as a person would write them ("60s", "16k").  The text loads back to the same
model (tests/golden and tests/unit/test_config_dump.py check both), so it is also
what any front-end (nginx files, later) means, in the one syntax every reader knows.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from porch.config import listeners
from porch.config.model import (Config, Global, HealthCheck, Limits, Pool, Route, Site, Stream, TlsFiles,
                                UpstreamTarget, UpstreamTLS, Webroot)
from porch.config.units import format_duration, format_size
from porch.policies import registry

_SIZES = frozenset({"max_header_size", "max_body"})  # bytes, spelled "16k"
_PROXY_PROTOCOL = {0: "off", 1: "v1", 2: "v2"}


def dump(config: Config, *, hide_token: bool = False) -> str:
    """`config` as porch.toml text, ending with a newline.  `hide_token` (the admin
    API's GET /config) leaves admin_token out, saying so: whoever reads the config
    there has the token already, but a copy pasted elsewhere should not carry it."""
    out = [f"# {config.source}, as Porch reads it: every default written out", "", "[porch]"]
    g = _global(config.porch)
    if hide_token and g.pop("admin_token", None) is not None:
        out.append("# admin_token: set, not shown")
    out += _pairs(g)
    for site in config.sites:
        out += ["", "[[site]]", *_pairs(_site(site, config.porch))]
        for route in site.routes:
            out += ["", "  [[site.route]]", *_pairs(_route(route, site), indent="  ")]
    for stream in config.streams:
        out += ["", "[[stream]]", *_pairs(_stream(stream))]
    return "\n".join(out) + "\n"


# --- the model -> TOML values ----------------------------------------------------


def _global(g: Global) -> dict[str, Any]:
    return {f.name: _plain(f.name, getattr(g, f.name)) for f in fields(Global)}


def _site(site: Site, g: Global) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if site.hosts:  # none: the catch-all
        out["hosts"] = list(site.hosts)
    if site.listen:  # none: every listener
        out["listen"] = listeners.spelled(site.listen, g)
    out["tls"] = _tls_files(site.tls) if isinstance(site.tls, TlsFiles) else site.tls
    out["redirect_http"] = site.redirect_http
    if site.hsts is not None:
        out["hsts"] = {"max_age": _duration(site.hsts.max_age),
                       "include_subdomains": site.hsts.include_subdomains, "preload": site.hsts.preload}
    challenge = site.acme_challenge
    out["acme_challenge"] = {"webroot": challenge.root} if isinstance(challenge, Webroot) else challenge
    out["on_certificate"] = site.on_certificate
    out["error_log"] = site.error_log  # None: [porch]'s
    if site.bundles:
        out["bundles"] = [{"path": b.path, "contents": list(b.contents), "mode": f"{b.mode:04o}",
                           "group": b.group} for b in site.bundles]
    out.update(_policies(site.policies))
    return out


def _route(route: Route, site: Site) -> dict[str, Any]:
    out: dict[str, Any] = _matcher(route)
    if route.upstreams:  # none: static files only (root)
        out["proxy"] = _proxy(route.upstreams)
    if route.matcher is None:  # a matcher route has no prefix to strip or to prefer
        out["strip_prefix"] = route.strip_prefix
        if route.priority_prefix:
            out["priority"] = "prefix"
    out.update({
        "upstream_host": route.upstream_host,
        "allow_trace": route.allow_trace,
        "upstream_proxy_protocol": _PROXY_PROTOCOL[route.upstream_proxy_protocol],
        "access_log": route.access_log,  # None: [porch]'s
        "access_log_format": route.access_log_format,
    })
    out.update((f.name, _plain(f.name, getattr(route.limits, f.name))) for f in fields(Limits))
    if any(t.scheme == "https" for t in route.upstreams):  # else unused, and refused
        out["upstream_tls"] = _upstream_tls(route.upstream_tls)
    out.update(_pool(route.pool))
    # A route's policies are its site's merged with its own: the site's are written
    # on the site, a route writes those that differ (merging them again changes
    # nothing: PolicySpec.merge).
    inherited = dict(site.policies)
    out.update(_policies(tuple((k, v) for k, v in route.policies if inherited.get(k, _NONE) != v)))
    return out


_NONE = object()


def _matcher(route: Route) -> dict[str, Any]:
    """How the route matches (config/matchers.py): path, exact, regex (with
    regex_case) or match."""
    m = route.matcher
    if m is None:
        return {"path": route.path}
    if m.kind == "regex":
        return {"regex": m.pattern, "regex_case": m.case}
    return {"exact" if m.kind == "exact" else "match": m.pattern}


def _proxy(targets: tuple[UpstreamTarget, ...]) -> Any:
    items = [t.url if t.weight == 1 else {"url": t.url, "weight": t.weight} for t in targets]
    return items[0] if len(items) == 1 else items


def _upstream_tls(tls: UpstreamTLS) -> dict[str, Any]:
    return {f.name: getattr(tls, f.name) for f in fields(UpstreamTLS)}


def _pool(pool: Pool) -> dict[str, Any]:
    out: dict[str, Any] = {f.name: _plain(f.name, getattr(pool, f.name)) for f in fields(Pool) if f.name != "health"}
    if pool.health is not None:
        out["health"] = _health(pool.health)
    return out


def _health(h: HealthCheck) -> dict[str, Any]:
    expect = [f"{low // 100}xx" if high - low == 99 else low for low, high in h.expect]
    return {"path": h.path, "interval": _duration(h.interval), "timeout": _duration(h.timeout),
            "expect": expect, "rise": h.rise, "fall": h.fall}


def _tls_files(files: TlsFiles) -> dict[str, Any]:
    return {"cert": files.cert, "key": files.key, "chain": files.chain}


def _policies(policies: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {key: registry.REGISTRY[key].dump(value) for key, value in policies}


def _stream(stream: Stream) -> dict[str, Any]:
    out: dict[str, Any] = {"passthrough": stream.target}
    if stream.protocol == "tls" and (stream.sni or stream.alpn):
        out["sni"] = list(stream.sni) or None
        out["alpn"] = list(stream.alpn) or None
    else:
        out["protocol"] = stream.protocol
    out["proxy_protocol"] = stream.proxy_protocol or "off"
    out["idle_timeout"] = _duration(stream.idle_timeout)
    out["connect_timeout"] = _duration(stream.connect_timeout)
    return out


def _duration(seconds: float) -> str:
    """As format_duration, with days for whole days ("180d", not "4320h")."""
    if seconds and seconds % 86400 == 0 and seconds % (365 * 86400):
        return f"{int(seconds // 86400)}d"
    return format_duration(seconds)


def _plain(name: str, value: Any) -> Any:
    """A model value as porch.toml writes it: floats are durations, some ints sizes."""
    if name in _SIZES:
        return "off" if value is None else format_size(value)
    if isinstance(value, float):
        return _duration(value)
    return list(value) if isinstance(value, tuple) else value


# --- TOML text -------------------------------------------------------------------


def _pairs(values: dict[str, Any], indent: str = "") -> list[str]:
    """`key = value` lines; None (not set) is left out, as TOML has no null."""
    return [f"{indent}{key} = {_toml(value)}" for key, value in values.items() if value is not None]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items() if v is not None)
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"{value!r} has no TOML spelling")


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)
