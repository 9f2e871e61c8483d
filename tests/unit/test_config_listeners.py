"""Listeners in the model (config/listeners.py) and their host tables (compile)."""

from __future__ import annotations

import textwrap

import pytest

from porch.config.compile import compile_config
from porch.config.errors import ConfigError
from porch.config.model import Listener
from porch.config.toml import loads
from porch.observability.accesslog import AccessLog
from porch.observability.errorlog import ErrorLog


def config(text: str, tmp_path=None):
    head = f'[porch]\nbind = ["127.0.0.1", "::1"]\nstate_dir = "{tmp_path or "/tmp/porch-unit"}"\n'
    return loads(head + textwrap.dedent(text), source="porch.toml")


TWO = """
[[site]]
hosts = ["chat.test"]
listen = "http"
proxy = "http://127.0.0.1:5080"
[[site]]
hosts = ["chat.test"]
listen = ["https"]
proxy = "https://127.0.0.1:5443"
"""


def test_listeners_come_from_porch_and_tls_listeners_only_with_a_tls_site():
    plain = config('[[site]]\nhosts = ["a.test"]\ntls = "off"\nproxy = "http://x:1"\n')
    assert plain.listeners == (Listener("127.0.0.1", 80, "plain"), Listener("::1", 80, "plain"))
    both = config(TWO)
    assert [(l.where, l.kind) for l in both.listeners] == [
        ("127.0.0.1:80", "plain"), ("[::1]:80", "plain"), ("127.0.0.1:443", "tls"), ("[::1]:443", "tls")]


def test_a_site_names_its_listeners_by_kind_port_or_address():
    cfg = config(TWO + '[[site]]\nhosts = ["x.test"]\nlisten = ["127.0.0.1:443", ":80"]\nproxy = "http://x:1"\n')
    http_site, https_site, mixed = cfg.sites
    assert [l.kind for l in http_site.listen] == ["plain", "plain"]
    assert http_site.tls == "off"  # plain listeners only: no certificate to get
    assert [l.kind for l in https_site.listen] == ["tls", "tls"] and https_site.tls == "internal"
    assert [l.where for l in mixed.listen] == ["127.0.0.1:80", "[::1]:80", "127.0.0.1:443"]


@pytest.mark.parametrize(("listen", "message"), [
    ('"ftp"', '"ftp" is not a listener; expected "http", "https", ":8443" or "127.0.0.1:80"'),
    ("[]", '[] is not a listener; expected "http", "https", ":8443" or "127.0.0.1:80", or an array of them'),
    ('["http", ":80"]', None),  # the same listeners twice: fine, they are one set
    ('["http", "http"]', '"http" is listed twice'),
    ('"[::2]:80"', '"[::2]:80": Porch does not listen on ::2 (bind is 127.0.0.1, ::1); add it to [porch] bind,'
                   ' or write ":80"'),
])
def test_listen_problems(listen, message):
    text = f'[[site]]\nhosts = ["a.test"]\nlisten = {listen}\nproxy = "http://x:1"\n'
    if message is None:
        assert config(text).sites[0].listen
        return
    with pytest.raises(ConfigError) as info:
        config(text)
    assert info.value.problems == [f"site[0].listen: {message}"]


def test_the_same_host_on_a_shared_listener_is_refused():
    with pytest.raises(ConfigError) as info:
        config(TWO + '[[site]]\nhosts = ["chat.test"]\nlisten = ":443"\nproxy = "http://x:1"\n')
    assert info.value.problems == ['site[2].hosts: "chat.test" is also in site[1]; a host may belong to one'
                                   " site only per listener, and their listen lists overlap"]


def test_each_listener_routes_among_its_own_sites(tmp_path):
    cfg = config(TWO + '[[site]]\nhosts = ["both.test"]\nproxy = "http://127.0.0.1:1"\n', tmp_path)
    runtime = compile_config(cfg, access_log=AccessLog("off"), error_log=ErrorLog("-"))
    tables = runtime.listener_hosts
    assert set(tables) == {("127.0.0.1", 80), ("::1", 80), ("127.0.0.1", 443), ("::1", 443)}
    assert tables["127.0.0.1", 80] is tables["::1", 80]  # one table per set of sites
    plain, tls = tables["127.0.0.1", 80], tables["127.0.0.1", 443]
    assert plain.lookup("chat.test").paths.match(b"/").balancer.targets[0].address == "http://127.0.0.1:5080"
    assert tls.lookup("chat.test").paths.match(b"/").balancer.targets[0].address == "https://127.0.0.1:5443"
    assert plain.lookup("both.test") is tls.lookup("both.test")


def test_without_listen_every_listener_shares_the_one_table(tmp_path):
    cfg = config('[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:1"\n', tmp_path)
    runtime = compile_config(cfg, access_log=AccessLog("off"), error_log=ErrorLog("-"))
    assert runtime.listener_hosts == {}  # connections use runtime.hosts, as before
