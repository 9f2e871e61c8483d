"""The recipes of examples/ against the guides' own files (issue 15, Recipes): each
example loads, and it compiles to the model the guide's nginx or Apache file compiles
to for what a user notices (hosts, routes, upstreams, Host sent upstream, max_body,
header rules, upstream TLS checks), but for the differences listed in INTENDED, each
with its reason.  A new difference fails the test until it is listed here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from porch.config import load

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples"
DATA = ROOT / "tests" / "data"


def summary(path: Path) -> dict[str, Any]:
    """{(host, route path, field): value} for the parts that matter."""
    config = load.load(path)
    out: dict[tuple[str, str, str], Any] = {}
    for site in config.sites:
        host = site.hosts[0] if site.hosts else "_"
        for route in site.routes:
            at = (host, route.path)
            out[(*at, "upstreams")] = tuple((u.scheme, u.host, u.port, u.path) for u in route.upstreams)
            out[(*at, "strip_prefix")] = route.strip_prefix
            out[(*at, "upstream_host")] = route.upstream_host
            out[(*at, "max_body")] = route.limits.max_body
            out[(*at, "verify")] = route.upstream_tls.verify if route.upstreams[0].scheme == "https" else None
            for key, value in route.policies:
                if key in ("request_headers", "response_headers", "basic_auth") and value is not None:
                    out[(*at, key)] = repr(value)
        out[(host, "", "hosts")] = tuple(sorted(site.hosts))
    return out


def differences(example: Path, guide: Path) -> set[tuple[str, str, str]]:
    """The keys whose values differ; a site only one side has is one key (host, "", "site")."""
    a, b = summary(example), summary(guide)
    hosts_a, hosts_b = {k[0] for k in a}, {k[0] for k in b}
    routes_a, routes_b = {k[:2] for k in a if k[1]}, {k[:2] for k in b if k[1]}
    found = {(h, "", "site") for h in hosts_a ^ hosts_b}
    found |= {(h, p, "route") for h, p in routes_a ^ routes_b if h in hosts_a & hosts_b}
    return found | {k for k in a.keys() | b.keys() if k[0] in hosts_a & hosts_b and a.get(k) != b.get(k)
                    and (not k[1] or (k[0], k[1]) in routes_a & routes_b)}


# needs the certificates its guide makes: tests/integration/test_radicale_mtls.py makes them and
# serves it against a real Radicale
NEEDS_FILES = ("radicale-mtls.toml",)


def test_every_example_loads() -> None:
    examples = [p for p in sorted(EXAMPLES.glob("*.toml")) if p.name not in NEEDS_FILES]
    assert len(examples) >= 5
    for path in examples:
        load.load(path)


# (example, guide file) -> the differences, each with its reason
_STREAMS = ("the recipe adds the Icecast streams over HTTPS (the guide's 'Securing the Icecast output"
            " streams' does it with certbot's bundle and an SSL listen-socket in Icecast)")
_CHALLENGE = ("the recipe passes Snikket's own ACME challenges (acme_challenge = \"upstream\" and a"
              " route to its port 5080); the guide's port-80 block proxies everything there")
_HSTS = ("the guide's ssl-settings snippet sends Strict-Transport-Security for 2 years on every"
         " site; the recipe leaves HSTS to be turned on per site (hsts = \"1y\"), as it cannot be taken"
         " back from browsers that saw it")
INTENDED: dict[tuple[str, str], dict[tuple[str, str, str], str]] = {
    ("libretime.toml", "nginx/libretime.conf"): {
        ("stream.example.org", "", "site"): _STREAMS,
    },
    ("libretime.toml", "apache/libretime.conf"): {
        ("stream.example.org", "", "site"): _STREAMS,
        ("libretime.example.org", "/", "upstream_host"): "the guide's Apache file has no"
        " ProxyPreserveHost On, so httpd sends Host: localhost:8080 (warned at check); LibreTime needs"
        " its public name, which the nginx file sends ($host): the recipe keeps the client's Host",
        ("libretime.example.org", "/", "max_body"): "the recipe has the nginx file's 512M (uploads);"
        " the Apache file says nothing: httpd's default 1 GiB",
    },
    ("snikket.toml", "nginx/snikket.conf"): {
        ("chat.example.com", "/", "upstreams"): "the guide's proxy_pass https://localhost:5080/ is a typo"
        " for 5443 (5080 is Snikket's plain HTTP port)",
        ("chat.example.com", "/", "request_headers"): "proxy_set_header X-Forwarded-Proto https:"
        " Porch sends it itself, with the scheme the client used",
        ("chat.example.com", "/.well-known/acme-challenge/", "route"): _CHALLENGE,
    },
    ("snikket.toml", "apache/snikket.conf"): {
        ("chat.example.com", "/", "upstreams"): "the Apache variant proxies to Snikket on another"
        " machine (https://chat.example.com/); the recipe runs on the same one (https://localhost:5443)",
        ("chat.example.com", "/", "max_body"): "the recipe has the nginx file's 20M; httpd's default"
        " is 1 GiB",
        ("chat.example.com", "/.well-known/acme-challenge/", "route"): _CHALLENGE,
    },
    ("radicale.toml", "nginx/radicale.conf"): {
        ("_", "", "site"): "the guide prints a bare location (read as a catch-all server); the recipe"
        " names the host dav.example.org",
        ("dav.example.org", "", "site"): "the same site, under its name",
    },
    ("opentalk.toml", "nginx/opentalk/nginx.conf"): {
        **{(host, "/", "response_headers"): _HSTS for host in ("example.com", "accounts.example.com",
                                                              "controller.example.com", "livekit.example.com")},
        **{(host, "/", "max_body"): "nginx's default client_max_body_size 1m; the recipe keeps Porch's"
           " default (no limit) for the web app and Keycloak, whose forms are small either way"
           for host in ("example.com", "accounts.example.com")},
        **{(host, "", "site"): "optional services (whiteboard, pad): in the recipe as commented sites"
           for host in ("pad.example.com", "whiteboard.example.com")},
    },
}


@pytest.mark.parametrize(("example", "guide"), sorted(INTENDED), ids=lambda x: x)
def test_example_matches_the_guides_file(example: str, guide: str) -> None:
    found = differences(EXAMPLES / example, DATA / guide)
    listed = {k for k, why in INTENDED[(example, guide)].items() if why}
    assert found == listed, f"unlisted: {sorted(found - listed)}; listed but equal: {sorted(listed - found)}"
