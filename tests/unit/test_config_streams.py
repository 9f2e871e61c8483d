"""[[stream]] and accept_proxy_protocol in porch.toml: the model, and errors naming key, value and fix."""

from __future__ import annotations

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.model import Stream
from porch.config.toml import loads
from porch.mux.streams import StreamTable
from porch.tls.clienthello import ClientHello

SITE = '[[site]]\nhosts = ["localhost"]\nproxy = "http://127.0.0.1:8080"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        loads(SITE + text)
    return err.value.problems


def test_streams_read_in_file_order():
    config = loads('[porch]\naccept_proxy_protocol = ["10.1.2.3/8"]\n' + SITE + '''
[[stream]]
sni = ["Chat.Example.com.", "*.chat.example.com"]
alpn = "xmpp-client"
passthrough = "127.0.0.1:5223"
proxy_protocol = "v2"
[[stream]]
protocol = "ssh"
passthrough = "[::1]:22"
idle_timeout = "10m"
''')
    assert config.porch.accept_proxy_protocol == ("10.0.0.0/8",)
    assert config.streams == (
        Stream(("127.0.0.1", 5223), sni=("chat.example.com", "*.chat.example.com"), alpn=("xmpp-client",),
               proxy_protocol="v2", key_path="stream[0]"),
        Stream(("::1", 22), protocol="ssh", idle_timeout=600.0, key_path="stream[1]"),
    )
    text = describe(config)
    assert "proxy protocol from  10.0.0.0/8" in text
    assert ("stream[0] tls sni chat.example.com, *.chat.example.com and alpn xmpp-client"
            " -> passthrough 127.0.0.1:5223 (proxy protocol v2, idle 1h)") in text
    assert "stream[1] ssh (or a client silent for 2s) -> passthrough [::1]:22 (idle 10m)" in text


def test_errors_name_the_key_the_value_and_the_fix():
    found = problems('''
[[stream]]
protocol = "xmpp"
sni = "x.example"
passthrough = "http://x:1"
prot = 1
[[stream]]
passthrough = "x:1"
[[stream]]
alpn = []
passthrough = "::1:22"
proxy_protocol = "v3"
[[stream]]
sni = "10.0.0.1"
''')
    assert found == [
        'stream[0].passthrough: "http://x:1" is a URL; a passthrough is raw TCP: write host:port,'
        ' like "127.0.0.1:5223" or "[::1]:5223"',
        "stream[0].prot: unknown key (did you mean protocol?)",
        'stream[0]: sni and alpn are read from a TLS ClientHello, and protocol = "xmpp" is not TLS;'
        ' remove them, or write protocol = "tls"',
        'stream[1]: matches nothing: add sni = [...], alpn = [...], or protocol = "tls" (every TLS'
        ' connection) or a plain protocol ("xmpp", "ssh", "http", "openvpn", "any")',
        "stream[2].alpn: [] is not an ALPN protocol id like \"xmpp-client\", or a non-empty array of them",
        'stream[2].passthrough: "::1:22": an IPv6 address goes in brackets; write host:port,'
        ' like "127.0.0.1:5223" or "[::1]:5223"',
        'stream[2].proxy_protocol: "v3" is not a PROXY protocol version; write "v1", "v2" or "off"',
        'stream[3].sni: "10.0.0.1" is not a server name; write one like "chat.example.com", or'
        ' "*.chat.example.com" for the names below it (clients send no SNI for IP addresses)',
        'stream[3]: no passthrough (add passthrough = "127.0.0.1:5223", where these connections go)',
    ]


def test_streams_need_an_https_site():
    with pytest.raises(ConfigError) as err:
        loads('[[site]]\nhosts = ["localhost"]\nproxy = "http://127.0.0.1:8080"\ntls = "off"\n'
              '[[stream]]\nprotocol = "any"\npassthrough = "127.0.0.1:1"\n')
    assert err.value.problems == ['stream[0]: streams share the HTTPS port, and no site serves HTTPS;'
                                  ' give a site a certificate (tls = "auto", "internal" or { cert, key })']


def test_matching_first_match_wildcards_and_acme_tls():
    xmpp = Stream(("127.0.0.1", 5223), alpn=("xmpp-client",), key_path="stream[0]")
    snikket = Stream(("127.0.0.1", 5443), sni=("chat.example.com", "*.chat.example.com"), key_path="stream[1]")
    table = StreamTable.build((xmpp, snikket), own_names=("porch.example.org",))
    assert table.for_hello(ClientHello("chat.example.com", ("xmpp-client",))) is xmpp
    assert table.for_hello(ClientHello("share.chat.example.com", ("h2",))) is snikket
    assert table.for_hello(ClientHello("a.b.chat.example.com", ())) is snikket
    assert table.for_hello(ClientHello("xchat.example.com", ())) is None
    assert table.for_hello(ClientHello(None, ("h2",))) is None
    # RFC 8737 validation of a name Porch serves: Porch's own, even when a stream would match
    any_tls = Stream(("127.0.0.1", 1), protocol="tls", alpn=("acme-tls/1",), key_path="stream[2]")
    table = StreamTable.build((any_tls,), own_names=("porch.example.org",))
    assert table.for_hello(ClientHello("porch.example.org", ("acme-tls/1",))) is None
    assert table.for_hello(ClientHello("chat.example.com", ("acme-tls/1",))) is any_tls
