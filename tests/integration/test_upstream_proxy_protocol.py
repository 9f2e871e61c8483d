"""upstream_proxy_protocol: a PROXY header (v1 or v2) before the request to an HTTP
upstream, naming the client, read by the `proxy-protocol` package (not Porch's code),
on a connection never shared with another client."""

from __future__ import annotations

import json

import pytest

from .helpers import RawConn
from .test_port_sharing import Target, target  # noqa: F401  (the fixture)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_upstream_learns_the_client_from_the_proxy_header(porch, target, version):  # noqa: F811
    up = target("proxyhttp")
    p = porch(f'[[site]]\nhosts = ["a.test"]\nproxy = "http://{up.address}"\n'
              f'upstream_proxy_protocol = "{version}"\n')
    docs = []
    with RawConn(p.port) as c:  # two requests on one client connection
        for path in ("/one", "/two"):
            c.send(f"GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
            r = c.read_response()
            assert r.status == 200
            docs.append(json.loads(r.body))
        client_port = c.sock.getsockname()[1]
    for doc, path in zip(docs, ("/one", "/two")):
        assert doc["source"] == ["127.0.0.1", client_port]
        assert doc["dest"] == ["127.0.0.1", p.port]
        assert doc["request"] == f"GET {path} HTTP/1.1"
        assert doc["conn_request"] == 1  # a connection of its own: one client's header only


def test_bad_version_is_refused_with_the_fix(tmp_path):
    from porch.config.errors import ConfigError
    from porch.config.toml import loads

    with pytest.raises(ConfigError, match=r'site\[0\].upstream_proxy_protocol: "v3" is not "v1", "v2" or "off"'):
        loads('[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\nupstream_proxy_protocol = "v3"\n')


def test_over_http2_too(porch, target):  # noqa: F811
    from .helpers import curl_fetch, free_port, resolve, wait_for_port

    up = target("proxyhttp")
    https_port = free_port()
    p = porch(f'[[site]]\nhosts = ["a.test"]\nproxy = "http://{up.address}"\nredirect_http = false\n'
              f'upstream_proxy_protocol = "v2"\n', https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")
    r = curl_fetch(f"https://a.test:{https_port}/h2", "--http2", "-k", *resolve("a.test", https_port))
    assert r.rc == 0 and r.status == 200, r.stderr
    doc = r.json()
    assert doc["source"][0] == "127.0.0.1" and doc["dest"] == ["127.0.0.1", https_port]
    assert doc["request"] == "GET /h2 HTTP/1.1"
