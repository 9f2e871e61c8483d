"""Policy keys in porch.toml (policies/registry.py): read, merged from [porch] to the
site to the route, shown by `porch check`, and refused with the key, the value and the fix."""

from __future__ import annotations

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.policies.headers import HeaderRules

BASE = '[porch]\nresponse_headers = { set = { "X-Frame-Options" = "DENY", "X-A" = "porch" } }\n'
SITE = """
[[site]]
hosts = ["app.test"]
tls = "off"
proxy = "http://127.0.0.1:9"
response_headers = { set = { "X-Frame-Options" = "SAMEORIGIN" }, remove = ["Server"] }
  [[site.route]]
  path = "/api/"
  response_headers = { add = { "Cache-Control" = "no-store" }, set = { "Server" = "porch" } }
"""


def rules(route) -> HeaderRules:
    return dict(route.policies)["response_headers"]


def test_merged_from_porch_to_site_to_route_name_by_name():
    config = loads(BASE + SITE)
    site = config.sites[0]
    api = next(r for r in site.routes if r.path == "/api/")
    root = next(r for r in site.routes if r.path == "/")
    assert rules(root) == HeaderRules(set=(("X-A", "porch"), ("X-Frame-Options", "SAMEORIGIN")),
                                      remove=("Server",))
    # the route sets Server: the site's removal of it gives way; the other rules stay
    assert rules(api) == HeaderRules(set=(("X-A", "porch"), ("X-Frame-Options", "SAMEORIGIN"),
                                          ("Server", "porch")),
                                     add=(("Cache-Control", "no-store"),))
    assert dict(site.policies)["response_headers"] == rules(root)  # for paths no route takes


def test_porch_check_shows_the_rules_on_each_route():
    lines = describe(loads(SITE)).splitlines()[-2:]
    assert lines == [
        "  /api/ -> http://127.0.0.1:9  (response_headers set X-Frame-Options: SAMEORIGIN,"
        " set Server: porch, add Cache-Control: no-store)",
        "  /     -> http://127.0.0.1:9  (response_headers set X-Frame-Options: SAMEORIGIN, remove Server)",
    ]


@pytest.mark.parametrize("rule, message", [
    ('{ set = { "Content-Length" = "5" } }', "Content-Length is written by Porch itself"),
    ('{ set = { "X-A" = "1\\r\\nX-Injected: 1" } }', "line break or NUL"),
    ('{ set = { "Bad Name" = "1" } }', "'Bad Name' is not a header name"),
    ('{ sett = { "X-A" = "1" } }', "'sett' is not set, add or remove"),
    ('{ remove = "Server" }', 'write remove = ["Name"]'),
    ('{ set = { "X-A" = 1 } }', "is not a string"),
    ('"X-A: 1"', "is not a table"),
    ('{ set = { "X-A" = "{client_addr}" } }', "{client_addr} is not something Porch fills in"),
])
def test_bad_response_rules_name_the_key_the_value_and_the_fix(rule, message):
    with pytest.raises(ConfigError) as e:
        loads(f'[[site]]\nhosts = ["app.test"]\nproxy = "http://127.0.0.1:9"\nresponse_headers = {rule}\n')
    text = str(e.value)
    assert "site[0].response_headers" in text and message in text, text


def test_request_rules_may_not_set_host():
    with pytest.raises(ConfigError, match="upstream_host"):
        loads('[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\n'
              'request_headers = { set = { "Host" = "x" } }\n')


def test_security_headers_defaults_off_switch_and_errors():
    config = loads('[porch]\nsecurity_headers = true\n[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\n'
                   '  [[site.route]]\n  path = "/embed/"\n  security_headers = false\n'
                   '  [[site.route]]\n  path = "/strict/"\n'
                   '  security_headers = { csp = "default-src \'self\'", frame_options = "", override = true }\n')
    routes = {r.path: dict(r.policies)["security_headers"] for r in config.sites[0].routes}
    assert [name for name, _ in routes["/"].fields] == [
        "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"]
    assert not routes["/"].override
    assert routes["/embed/"] is None  # a route turns the site's off
    assert routes["/strict/"].override
    assert dict(routes["/strict/"].fields) == {
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "strict-origin-when-cross-origin",
        "Content-Security-Policy": "default-src 'self'"}
    text = describe(config)
    assert "security_headers off" in text
    assert "security_headers X-Content-Type-Options, X-Frame-Options, Referrer-Policy)" in text
    for bad, message in (('"yes"', "is not true, or a table"), ("{ xfo = \"DENY\" }", "'xfo' is not one of"),
                         ("{ override = 1 }", "override: 1 is not true or false")):
        with pytest.raises(ConfigError) as e:
            loads(f'[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\nsecurity_headers = {bad}\n')
        assert "site[0].security_headers" in str(e.value) and message in str(e.value), str(e.value)
