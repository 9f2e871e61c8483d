"""nginx value syntax -> porch.toml values (config/nginx/variables.py), one directive
mapping at a time, with the messages a user reads."""

from __future__ import annotations

import pytest

from porch.config.nginx.parse import Directive
from porch.config.nginx.variables import Problem, duration, header_value, listen, seconds, size


def d(name: str, *args: str) -> Directive:
    return Directive(name, args, "site.conf", 3)


@pytest.mark.parametrize(("text", "toml"), [("1m", "1M"), ("512M", "512M"), ("20k", "20K"), ("1g", "1G"),
                                            ("1048576", "1048576"), ("0", "0")])
def test_sizes(text: str, toml: str) -> None:
    assert size(text, [], "x") == toml


def test_size_with_a_b_loads_with_the_fix_named() -> None:
    warnings: list[str] = []
    assert size("20MB", warnings, "snikket.conf:41: client_max_body_size") == "20M"
    assert warnings == ['snikket.conf:41: client_max_body_size: "20MB" is refused by nginx ("invalid value");'
                        " read as 20M: write 20M (nginx sizes take k, m or g, no B)"]


def test_size_that_is_none() -> None:
    with pytest.raises(Problem, match='"lots" is not an nginx size'):
        size("lots", [], "x")


@pytest.mark.parametrize(("text", "value"), [("60", 60), ("300s", 300), ("5m", 300), ("1h", 3600), ("1m30s", 90),
                                             ("500ms", 0.5), ("1d", 86400)])
def test_times(text: str, value: float) -> None:
    assert seconds(text) == value


def test_durations_as_porch_writes_them() -> None:
    assert (duration("5m"), duration("500ms")) == ("300s", "500ms")
    with pytest.raises(Problem, match='"soon" is not an nginx time'):
        seconds("soon")


@pytest.mark.parametrize(("args", "address", "port", "ssl", "http2", "default"), [
    (("80",), None, 80, False, False, False),
    (("[::]:80",), None, 80, False, False, False),
    (("443", "ssl", "http2"), None, 443, True, True, False),
    (("[::]:443", "ssl", "ipv6only=on"), None, 443, True, False, False),
    (("127.0.0.1:8080", "default_server"), "127.0.0.1", 8080, False, False, True),
    (("localhost",), "localhost", 80, False, False, False),
])
def test_listen(args, address, port, ssl, http2, default) -> None:
    got = listen(d("listen", *args))
    assert (got.address, got.port, got.ssl, got.http2, got.default) == (address, port, ssl, http2, default)


@pytest.mark.parametrize(("args", "message"), [
    (("unix:/run/app.sock",), "UNIX socket"),
    (("80", "quic"), "quic is not supported here"),
    (("80", "proxy_protocol"), "accept_proxy_protocol"),
    (("99999",), "has no valid port"),
])
def test_listen_refused(args, message) -> None:
    with pytest.raises(Problem, match=message):
        listen(d("listen", *args))


def test_header_values() -> None:
    constants = {"server_name": "dav.example.org", "server_port": "443"}
    assert header_value("$remote_addr", constants) == "{client_ip}"
    assert header_value("wss://$host https://*.example.com", constants) == "wss://{host} https://*.example.com"
    assert header_value("$scheme://$server_name:$server_port", constants) == "{scheme}://dav.example.org:443"
    assert header_value("${remote_user}", constants) == "{remote_user}"
    with pytest.raises(Problem, match=r"\$request_uri has no Porch equivalent"):
        header_value("$request_uri", constants)
    with pytest.raises(Problem, match="holds braces"):
        header_value("{json}", constants)
