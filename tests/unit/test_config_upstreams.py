"""porch.toml's upstream pool keys (config/upstreams.py): the model they build, the
problems they report, and their `porch check` lines."""

import textwrap

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.model import HealthCheck, Pool, UpstreamTarget
from porch.config.toml import loads


def config(text: str):
    return loads(textwrap.dedent(text), source="porch.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(text)
    return info.value.problems


POOL = """
[[site]]
hosts = ["app.example.org"]
proxy = ["http://10.0.0.4:8080", { url = "http://10.0.0.5:8080", weight = 5 }]
balance = "least_conn"
max_fails = 3
fail_timeout = "30s"
retries = 2
health = { path = "/healthz", interval = "10s", timeout = "1s", expect = ["2xx", 301], rise = 1, fall = 2 }
  [[site.route]]
  path = "/api/"
  balance = "ip_hash"
"""


def test_pool_keys_build_the_model_and_routes_inherit_them():
    site = config(POOL).sites[0]
    api, root = site.routes
    assert root.upstreams == (UpstreamTarget("http", "10.0.0.4", 8080), UpstreamTarget("http", "10.0.0.5", 8080, weight=5))
    health = HealthCheck(path="/healthz", interval=10.0, timeout=1.0, expect=((200, 299), (301, 301)), rise=1, fall=2)
    assert root.pool == Pool(balance="least_conn", max_fails=3, fail_timeout=30.0, retries=2, health=health)
    assert api.pool == Pool(balance="ip_hash", max_fails=3, fail_timeout=30.0, retries=2, health=health)


def test_defaults_are_nginx_ones():
    route = config('[[site]]\nhosts = "a.example"\nproxy = ["http://a:1", "http://b:1"]\n').sites[0].routes[0]
    assert route.pool == Pool(balance="round_robin", max_fails=1, fail_timeout=10.0, retries=1, health=None)
    assert config('[[site]]\nhosts = "a.example"\nproxy = "http://a:1"\nhealth = {}\n').sites[0].routes[0].pool.health \
        == HealthCheck(path="/health", interval=5.0, timeout=2.0, expect=((200, 299),), rise=2, fall=3)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('balance = "sticky"', 'site[0].balance: "sticky" is not a balancing mode; expected one of: "round_robin",'
                               ' "least_conn", "ip_hash", "uri_hash", "random_two", "cookie"'),
        ("max_fails = -1", "site[0].max_fails: -1 is out of range; expected an integer 0 or more"
                           " (failures within fail_timeout that take a target out; 0: never)"),
        ('fail_timeout = "0s"', 'site[0].fail_timeout: "0s" is zero; write a duration like "10s"'),
        ('retries = "1"', 'site[0].retries: "1" is not an integer; expected an integer 0-100'
                          ' (other targets tried after a failed one; 0: none)'),
        ('health = "/health"', 'site[0].health: "/health" is not a table; write health = { path = "/health" }'
                               " (and interval, timeout, expect, rise, fall as needed)"),
        ('health = { expect = "20x" }', 'site[0].health.expect: "20x" is not a status; write a status (200),'
                                        ' a class ("2xx"), or several: "2xx,3xx" or [200, 204]'),
        ('health = { interval = "1s", timeout = "2s" }', "site[0].health.timeout: 2s is longer than interval (1s);"
                                                         " a probe must end before the next begins: shorten it"),
        ('health = { path = "health" }', 'site[0].health.path: "health" is not a path; write one like "/health"'),
        ("health = { rise = 0 }", "site[0].health.rise: 0 is out of range; expected an integer 1-100"
                                  " (good probes that bring a target back)"),
        ("health = { colour = 1 }", "site[0].health.colour: unknown key (expected one of: path, interval,"
                                    " timeout, expect, rise, fall)"),
    ],
)  # fmt: skip
def test_pool_key_problems_name_key_value_and_fix(line, message):
    assert problems(f'[[site]]\nhosts = "a.example"\nproxy = ["http://a:1", "http://b:1"]\n{line}\n') == [message]


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ('[{ url = "http://a:1", weight = 0 }]', "0 is out of range; expected an integer 1-1000 (weight: its share of the requests)"),
        ('["http://a:1", { url = "http://b:1", weight = 2.5 }]',
         "2.5 is not an integer; expected an integer 1-1000 (target 2 weight: its share of the requests)"),
        ('[{ weight = 2 }]', 'has no url; write { url = "http://host:port", weight = 5 }'),
        ('[{ url = "http://a:1", wieght = 2 }]', "has unknown key wieght; a target table takes url and weight"),
        ('["http://a:1", { url = "http://a:1/", weight = 2 }]', '"http://a:1" is listed twice'),
        ('[{ url = "a:1" }]', '"a:1" is not an http:// or https:// URL (write it as http://a:1)'),
    ],
)  # fmt: skip
def test_weighted_target_problems(proxy, message):
    assert problems(f'[[site]]\nhosts = "a.example"\nproxy = {proxy}\n') == [f"site[0].proxy: {message}"]


def test_porch_check_shows_weights_and_pool():
    text = describe(config(POOL))
    assert "-> http://10.0.0.4:8080, http://10.0.0.5:8080 (weight 5)" in text
    assert ("pool: least conn, out for 30s after 3 failure(s), 2 retries, health GET /healthz every 10s"
            " (timeout 1s, expect 2xx,301, rise 1, fall 2)") in text
    assert "pool:" not in describe(config('[[site]]\nhosts = "a.example"\nproxy = "http://a:1"\n'))
