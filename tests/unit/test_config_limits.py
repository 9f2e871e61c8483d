"""rate_limit, allow / deny, max_connections(_per_client) in porch.toml: read, merged,
shown by `porch check`, refused with the key, the value and the fix; the policies'
decisions on addresses and keys."""

from __future__ import annotations

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.limits.table import SharedTable
from porch.pipeline import Chain, Reply
from porch.policies import allow, rate_limit

SITE = '[[site]]\nhosts = ["app.test"]\nproxy = "http://127.0.0.1:9"\n'


def policies(text: str) -> dict:
    return dict(loads(text).sites[0].routes[0].policies)


def test_rate_limit_read_with_nginx_defaults_and_merged():
    p = policies('[porch]\nrate_limit = { rate = "10r/s", burst = 20, nodelay = true }\n' + SITE)
    assert p["rate_limit"] == rate_limit.RateLimit("10r/s", 10_000, 20, True, 429, "client")
    p = policies(SITE + 'rate_limit = { rate = "30r/m" }\n')
    assert p["rate_limit"] == rate_limit.RateLimit("30r/m", 500, 0, False, 429, "client")
    assert rate_limit.parse({"rate": "1r/m"}).per_second_milli == 16  # nginx: 1000 / 60
    off = policies('[porch]\nrate_limit = { rate = "10r/s" }\n' + SITE + "rate_limit = false\n")
    assert off.get("rate_limit") is None


@pytest.mark.parametrize("value, message", [
    ('{ rate = "10/s" }', "rate: '10/s' is not a rate; write requests per second or minute"),
    ('{ rate = "10r/h" }', '"10r/s", "30r/m"'),
    ('{ burst = 5 }', "rate is missing"),
    ('{ rate = "1r/s", burst = -1 }', "burst: -1 is not a whole number from 0"),
    ('{ rate = "1r/s", nodelay = "yes" }', "nodelay: 'yes' is not true or false"),
    ('{ rate = "1r/s", status = 200 }', "status: 200 is not an error status from 400 to 599"),
    ('{ rate = "1r/s", key = "ip" }', 'key: \'ip\' is not "client", "user" or "header:Name"'),
    ('{ rate = "1r/s", key = "header:X Bad" }', "header:X-Api-Key"),
    ('{ rate = "1r/s", brust = 3 }', "'brust' is not one of rate, burst, nodelay"),
    ('"10r/s"', "is not a table like"),
])
def test_rate_limit_errors_name_the_key_the_value_and_the_fix(value, message):
    with pytest.raises(ConfigError) as e:
        loads(SITE + f"rate_limit = {value}\n")
    assert "site[0].rate_limit" in str(e.value) and message in str(e.value), str(e.value)


def test_allow_and_deny_read_normalised():
    p = policies(SITE + 'allow = ["10.0.0.0/8", "::1", "::ffff:192.168.0.0/112"]\ndeny = ["10.0.0.13"]\n')
    assert p["allow"] == allow.Networks(("10.0.0.0/8", "::1/128", "192.168.0.0/16"))
    assert p["deny"] == allow.Networks(("10.0.0.13/32",))
    assert policies(SITE + 'deny = "all"\n')["deny"] == allow.Networks(("0.0.0.0/0", "::/0"))


@pytest.mark.parametrize("value, message", [
    ('["10.0.0.0/33"]', "'10.0.0.0/33' is not an address or network"),
    ('["example.org"]', "'example.org' is not an address or network"),
    ("[]", 'write ["10.0.0.0/8", "::1"]'),
    ("[10]", "10 is not an address or network"),
])
def test_allow_errors(value, message):
    with pytest.raises(ConfigError) as e:
        loads(SITE + f"allow = {value}\n")
    assert "site[0].allow" in str(e.value) and message in str(e.value), str(e.value)


def test_max_connections_read_checked_and_shown():
    cfg = loads("[porch]\nmax_connections = 1000\nmax_connections_per_client = 50\n" + SITE)
    assert (cfg.porch.max_connections, cfg.porch.max_connections_per_client) == (1000, 50)
    assert "max connections  1000 in all, 50 per client (refused at accept)" in describe(cfg)
    assert loads(SITE).porch.max_connections_per_client is None
    assert loads('[porch]\nmax_connections_per_client = "off"\n' + SITE).porch.max_connections_per_client is None
    with pytest.raises(ConfigError, match=r"porch.max_connections_per_client: 0 is out of range; "
                                          r"expected a whole number from 1 to 10000000"):
        loads("[porch]\nmax_connections_per_client = 0\n" + SITE)


def test_porch_check_describes_the_policies():
    text = describe(loads(SITE + 'rate_limit = { rate = "10r/s", burst = 20, nodelay = true }\n'
                           'allow = ["10.0.0.0/8"]\n'))
    assert "rate_limit 10r/s burst 20 nodelay per client, over it 429" in text
    assert "allow 10.0.0.0/8" in text


class Ctx:
    """A Context with what these policies read."""

    def __init__(self, ip="10.1.2.3", headers=(), user=""):
        from porch.http.model import Headers, RequestHead
        self.client_ip = ip
        self.vars = {"remote_user": user} if user else {}
        self.request = RequestHead(b"GET", b"/", b"app.test", b"1.1", Headers.of(headers))
        self.headers = self.request.headers.flat
        self.errors: list[str] = []

    def log_error(self, policy, message):
        self.errors.append(f"{policy}: {message}")


@pytest.mark.parametrize("ip, allowed", [
    ("10.9.9.9", True), ("10.0.0.13", False), ("::ffff:10.9.9.9", True), ("::ffff:10.0.0.13", False),
    ("192.168.1.1", False), ("::1", True), ("::2", False), ("not an address", False),
])
def test_allow_with_deny_first(ip, allowed):
    rules = [allow.build_allow(allow.parse(["10.0.0.0/8", "::1"])), allow.build_deny(allow.parse(["10.0.0.13"]))]
    refused = [r for r in (p.request(Ctx(ip)) for p in rules) if r is not None]
    assert (not refused) is allowed
    if refused:
        assert refused[0].status == 403 and "access forbidden" in refused[0].cause


def test_deny_alone_lets_the_rest_in():
    rules = allow.build_deny(allow.parse(["192.0.2.0/24", "2001:db8::/32"]))
    assert rules.request(Ctx("192.0.2.7")).status == 403
    assert rules.request(Ctx("2001:db8::1")).status == 403
    assert rules.request(Ctx("198.51.100.1")) is None
    assert rules.request(Ctx("2001:db9::1")) is None


def rl(**kw):
    return rate_limit.build(rate_limit.parse({"rate": "10r/s", **kw}),
                            type("Env", (), {"counters": SharedTable.create(64)})())


def test_rejections_carry_status_and_retry_after_and_are_logged_once():
    policy = rl(burst=2, nodelay=True)
    ctx = Ctx()
    results = [policy.request(ctx) for _ in range(6)]
    assert results[:3] == [None, None, None]
    assert all(isinstance(r, Reply) and r.status == 429 for r in results[3:])
    assert results[3].headers.get(b"Retry-After") == b"1"
    assert len(ctx.errors) == 1 and "limiting requests of '10.1.2.3'" in ctx.errors[0]


def test_delay_without_nodelay_is_excess_over_rate():
    policy = rl(burst=5)
    ctx = Ctx()
    assert policy.request(ctx) is None  # the first: excess 0
    waits = [policy.request(ctx) for _ in range(3)]
    try:
        delays = [w.cr_frame.f_locals["delay"] for w in waits]
    finally:
        for w in waits:
            w.close()
    # 1000, 2000, 3000 milli-requests at 10r/s, less what leaked meanwhile (10 a ms)
    assert delays == pytest.approx([0.1, 0.2, 0.3], abs=0.02)
    assert delays[0] < delays[1] < delays[2]


def test_keys_header_and_user_and_empty_keys_not_limited():
    policy = rl(key="header:X-Api-Key", nodelay=True)
    assert policy.request(Ctx(headers=[(b"X-Api-Key", b"k1")])) is None
    assert policy.request(Ctx(headers=[(b"X-Api-Key", b"k1")])).status == 429
    assert policy.request(Ctx(headers=[(b"x-api-key", b"k2")])) is None  # another key
    assert all(policy.request(Ctx()) is None for _ in range(5))  # no header: not counted
    user = rl(key="user", nodelay=True)
    assert user.name == "rate_limit_user"
    assert user.request(Ctx(user="alice")) is None and user.request(Ctx(user="alice")).status == 429
    assert user.request(Ctx(user="bob")) is None


def test_user_key_runs_after_authentication():
    user = rl(key="user")
    client = rl()
    from porch.pipeline import ORDER
    assert ORDER.index("acme_challenge") < ORDER.index("allow") < ORDER.index("rate_limit")
    assert ORDER.index("basic_auth") < ORDER.index("rate_limit_user")
    assert Chain([user, client]).names == ("rate_limit", "rate_limit_user")
