"""forward_auth's config (policies/forward_auth.py): read in [porch], sites and routes,
merged inward (a route's `false` turns it off), shown by `porch check`, and refused
with the key, the value and the fix."""

from __future__ import annotations

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.policies.forward_auth import ForwardAuth, identity_names

SITE = '[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\n'
AUTH = '{ url = "http://127.0.0.1:9091/api/verify?rd=https://auth.test/", copy_headers = ["Remote-User", "Remote-Groups"], timeout = "2s" }'


def test_merged_inward_and_a_route_turns_it_off():
    config = loads(f"[porch]\nforward_auth = {AUTH}\n" + SITE
                   + '  [[site.route]]\n  path = "/public/"\n  forward_auth = false\n')
    routes = {r.path: dict(r.policies)["forward_auth"] for r in config.sites[0].routes}
    assert routes["/public/"] is None
    auth = routes["/"]
    assert auth == ForwardAuth(url="http://127.0.0.1:9091/api/verify?rd=https://auth.test/", scheme="http",
                               host="127.0.0.1", port=9091, target="/api/verify?rd=https://auth.test/",
                               copy_headers=("Remote-User", "Remote-Groups"), timeout=2.0)
    assert identity_names(auth) == ("remote-user", "remote-groups")
    assert identity_names(None) == ()
    text = describe(config)
    assert "forward_auth off" in text
    assert "forward_auth http://127.0.0.1:9091/api/verify?rd=https://auth.test/, copies Remote-User," \
           " Remote-Groups, timeout 2s" in text


def test_defaults_port_and_timeout():
    config = loads(SITE + 'forward_auth = { url = "https://auth.test" }\n')
    auth = dict(config.sites[0].policies)["forward_auth"]
    assert (auth.scheme, auth.port, auth.target, auth.copy_headers, auth.timeout) == ("https", 443, "/", (), 5.0)


@pytest.mark.parametrize("value, message", [
    ('"http://127.0.0.1:9091"', "is not a table; write { url ="),
    ("true", "is not a table"),
    ('{ copy_headers = ["Remote-User"] }', "url is missing"),
    ('{ url = "127.0.0.1:9091/verify" }', "is not an http:// or https:// URL"),
    ('{ url = "ftp://127.0.0.1/verify" }', "is not an http:// or https:// URL"),
    ('{ url = "http://u:p@127.0.0.1/verify" }', "takes no user info"),
    ('{ url = "http://127.0.0.1:99999/verify" }', "is not a valid URL"),
    ('{ url = "http://127.0.0.1/verify", copy_headers = "Remote-User" }', 'write copy_headers = ["Remote-User"]'),
    ('{ url = "http://127.0.0.1/verify", copy_headers = ["Remote User"] }', "'Remote User' is not a header name"),
    ('{ url = "http://127.0.0.1/verify", copy_headers = ["Content-Length"] }', "Content-Length is written by Porch"),
    ('{ url = "http://127.0.0.1/verify", timeout = "soon" }', 'timeout: "soon" is not a duration'),
    ('{ url = "http://127.0.0.1/verify", timeout = 0 }', "is not above zero"),
    ('{ url = "http://127.0.0.1/verify", header = ["X"] }', "'header' is not one of url, copy_headers, timeout"),
])
def test_errors_name_the_key_the_value_and_the_fix(value, message):
    with pytest.raises(ConfigError) as e:
        loads(SITE + f"forward_auth = {value}\n")
    text = str(e.value)
    assert "site[0].forward_auth" in text and message in text, text
