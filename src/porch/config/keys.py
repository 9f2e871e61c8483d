"""Which key each table takes, and its parser: [porch], [[site]], [[site.route]].

Policy keys come from policies/registry.py (SPECS), so a new policy needs no edit
here.  `unknown` says why a key is not read where it was written.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from porch.config import admin, listeners, matchers, upstreams
from porch.config.acme_keys import acme_ca, acme_challenge, bundles, command, pem_file
from porch.config.hosts import hosts, proxy, route_path, upstream_host
from porch.config.tls_keys import hsts, tls, tls_ciphers, tls_default, tls_protocols, upstream_tls
from porch.config.values import (Parser, bind, boolean, connections, duration, email, error_log,
                                 http2_engine, max_body, networks, nonempty, one_of, port, show, size,
                                 streams, workers)
from porch.policies import registry

# --- the key tables ------------------------------------------------------------

LIMIT_KEYS: dict[str, Parser] = {
    "max_body": max_body,
    "header_timeout": duration(zero_ok=False),
    "body_timeout": duration(zero_ok=False),
    "upstream_connect_timeout": duration(zero_ok=False),
    "upstream_timeout": duration(zero_ok=False),
    "tunnel_idle_timeout": duration(zero_ok=False),
}
GLOBAL_ONLY_KEYS: dict[str, Parser] = {
    "http_port": port,
    "https_port": port,
    "bind": bind,
    "trusted_proxies": networks,
    "accept_proxy_protocol": networks,
    "workers": workers,
    "access_log": nonempty('a file path, "-" for stdout, or "off"'),
    "access_log_format": one_of("combined", "vhost_combined", "json"),
    "error_log": error_log,
    "state_dir": nonempty("a directory path"),
    "max_header_size": size,
    # 0 is meaningful for these: no keep-alive (as in nginx), stop (or replace
    # workers on reload) without draining
    "keepalive_timeout": duration(zero_ok=True),
    "shutdown_timeout": duration(zero_ok=True),
    "drain_timeout": duration(zero_ok=True),
    "email": email,
    "acme_ca": acme_ca,
    "acme_ca_root": pem_file,
    "acme_challenge_type": one_of("auto", "http-01", "tls-alpn-01"),
    "on_certificate": command,
    "tls_protocols": tls_protocols,
    "tls_ciphers": tls_ciphers,
    "http2": boolean,
    "max_concurrent_streams": streams,
    "http2_engine": http2_engine,
    "send_timeout": duration(zero_ok=False),
    "underscores_in_headers": boolean,
    "error_log_level": one_of("debug", "info", "warn", "error"),
    "max_connections": connections,
    "max_connections_per_client": connections,
    "admin": admin.parse_address,  # the admin API (config/admin.py)
    "admin_token": admin.parse_token,
    "admin_token_file": nonempty("a file path"),
}
def _proxy_protocol_version(value: Any) -> int:
    if value in ("v1", "v2", "off"):
        return {"v1": 1, "v2": 2, "off": 0}[value]
    raise ValueError(f'{show(value)} is not "v1", "v2" or "off" (the PROXY protocol version'
                     " the upstream reads: HAProxy's send-proxy is v1, send-proxy-v2 is v2)")


# Keys a route takes, each (but path) also a site key whose value routes inherit.
ROUTE_KEYS: dict[str, Parser] = {
    "path": route_path,
    # route matchers besides path (config/matchers.py, routing.py); route-only
    "exact": matchers.exact_path,
    "regex": matchers.regex,
    "regex_case": boolean,
    "match": matchers.glob,
    "priority": matchers.priority,
    "proxy": proxy,
    "strip_prefix": boolean,
    "upstream_host": upstream_host,
    "allow_trace": boolean,
    "upstream_proxy_protocol": _proxy_protocol_version,
    "access_log": nonempty('a file path, "-" for stdout, or "off"'),  # per route or site
    "access_log_format": one_of("combined", "vhost_combined", "json"),
    # merged key by key: route over site over [porch]
    "upstream_tls": upstream_tls,
    **LIMIT_KEYS,
    **upstreams.POOL_KEYS,  # balance, max_fails, fail_timeout, retries, health
}
# Policy keys (policies/registry.py): in [porch], a site or a route, merged in that order.
POLICY_KEYS: dict[str, Parser] = {spec.key: spec.parse for spec in registry.SPECS}
ROUTE_KEYS.update(POLICY_KEYS)
_INHERITED = ("proxy", "strip_prefix", "upstream_host", "allow_trace", "upstream_proxy_protocol",
              "access_log", "access_log_format", *upstreams.POOL_KEYS)


def _nested(value: Any) -> Any:
    return value  # a table read by its own step (`_Reader.tables`), not here


SITE_KEYS: dict[str, Parser] = {
    "hosts": hosts,
    "tls": tls,
    "redirect_http": boolean,
    "hsts": hsts,
    **{key: ROUTE_KEYS[key] for key in _INHERITED},
    "upstream_tls": upstream_tls,
    **LIMIT_KEYS,
    **POLICY_KEYS,
    "acme_challenge": acme_challenge,
    "on_certificate": command,
    "bundles": bundles,
    "error_log": error_log,  # the site's own (nginx's error_log per server)
    "listen": listeners.parse,  # config/listeners.py
    "route": _nested,
}
SITE_ACME_KEYS = ("acme_challenge", "on_certificate", "bundles")
# [porch] keys that are defaults for every site, and their parser there.
_SITE_DEFAULT_KEYS: dict[str, Parser] = {"tls": tls_default}
GLOBAL_KEYS: dict[str, Parser] = {**GLOBAL_ONLY_KEYS, "upstream_tls": upstream_tls, **LIMIT_KEYS,
                                   **_SITE_DEFAULT_KEYS, **POLICY_KEYS}
TOP_KEYS: dict[str, Parser] = {"porch": _nested, "site": _nested, "stream": _nested}

# Where each key belongs, for a key written in the wrong table.
HOME = {
    **dict.fromkeys(GLOBAL_ONLY_KEYS, "[porch]"),
    **dict.fromkeys(SITE_KEYS, "[[site]]"),
    **dict.fromkeys(("access_log", "access_log_format", "error_log"), "[porch], [[site]]"),
    "on_certificate": "[porch] or [[site]]",
    **dict.fromkeys(matchers.KEYS, "[[site.route]]"),
    "route": "[[site.route]] tables, after their [[site]]",
}


def unknown(key: str, keys: Mapping[str, Parser], scope: str) -> str:
    """Why `key` is not read here: it belongs elsewhere, a near miss, or the valid keys."""
    if key in HOME:
        return f"not {scope} (write it in {HOME[key]})"
    close = difflib.get_close_matches(key, list(keys), n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key (expected one of: {', '.join(keys)})"

