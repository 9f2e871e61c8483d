"""http/upgrade.py and the tunnel_idle_timeout key: no sockets."""

from __future__ import annotations

import textwrap

import pytest

from porch.config.compile import compile_config
from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.http.upgrade import BodyAfterUpgrade, is_websocket
from porch.observability.accesslog import AccessLog
from porch.observability.errorlog import ErrorLog


@pytest.mark.parametrize(("value", "websocket"), [
    (b"websocket", True), (b"WebSocket", True), (b" websocket ", True),
    (b"h2c", False), (b"websocket, h2c", False), (b"TLS/1.0", False), (b"", False),
])
def test_only_websocket_is_forwarded(value, websocket):
    assert is_websocket(value) is websocket


def run_body(length: int, pieces: list[bytes]) -> tuple[bytes, list[bytes]]:
    body: list[bytes] = []
    done: list[bytes] = []
    reader = BodyAfterUpgrade(length, body.append, done.append)
    for piece in pieces:
        if done:
            break
        reader.feed_data(piece)
    return b"".join(body), done


def test_body_after_upgrade_counts_the_body_out_and_hands_back_the_rest():
    body, done = run_body(5, [b"he", b"l", b"loGET / HTTP/1.1\r\n"])
    assert body == b"hello" and done == [b"GET / HTTP/1.1\r\n"]
    body, done = run_body(3, [b"abc"])
    assert body == b"abc" and done == [b""]
    body, done = run_body(4, [b"ab"])
    assert body == b"ab" and done == []  # still waiting for two bytes


SITE = """
    [porch]
    tunnel_idle_timeout = "2h"
    [[site]]
    hosts = ["livekit.example.com"]
    proxy = "http://127.0.0.1:7880"
    tunnel_idle_timeout = "300s"
      [[site.route]]
      path = "/rtc/"
      tunnel_idle_timeout = "10m"
    [[site]]
    hosts = ["other.example.com"]
    proxy = "http://127.0.0.1:8080"
"""


def test_tunnel_idle_timeout_route_over_site_over_porch():
    config = loads(textwrap.dedent(SITE), source="porch.toml")
    livekit, other = config.sites
    by_path = {route.path: route.limits.tunnel_idle_timeout for route in livekit.routes}
    assert by_path == {"/rtc/": 600.0, "/": 300.0}
    assert other.routes[0].limits.tunnel_idle_timeout == 7200.0
    runtime = compile_config(config, access_log=AccessLog("off"), error_log=ErrorLog("-"))
    _, site = runtime.hosts.find(b"livekit.example.com")
    assert site.paths.match(b"/rtc/x").tunnel_idle_timeout == 600.0
    assert "tunnel_idle_timeout 5m" in describe(config)


def test_tunnel_idle_timeout_default_is_an_hour():
    config = loads('[[site]]\nproxy = "http://127.0.0.1:1"\n')
    assert config.sites[0].routes[0].limits.tunnel_idle_timeout == 3600.0
    assert "tunnel_idle_timeout" not in describe(config)  # defaults are not printed


def test_bad_tunnel_idle_timeout_names_the_key():
    with pytest.raises(ConfigError) as info:
        loads('[[site]]\nproxy = "http://127.0.0.1:1"\ntunnel_idle_timeout = "soon"\n', source="porch.toml")
    [message] = info.value.problems
    assert message.startswith('site[0].tunnel_idle_timeout: "soon"')
