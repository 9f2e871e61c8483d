"""uvloop's SSLProtocol, where Porch's TLS transport (server/tls_transport.pyx) is not
built or not usable: PORCH_UVLOOP_TLS=1 makes a worker take that path, which must
serve the HTTPS listener and the port-sharing Mux as before."""

from __future__ import annotations

import pytest

from .helpers import curl_fetch, free_port, resolve, wait_for_port
from .tlscerts import TestCA


@pytest.mark.parametrize("shared", [False, True], ids=["listener", "mux"])
def test_uvloop_tls_serves_http1_and_h2(porch, upstream, tmp_path, monkeypatch, shared):
    monkeypatch.setenv("PORCH_UVLOOP_TLS", "1")  # the workers inherit it
    ca = TestCA(tmp_path, "Porch CA")
    cert, key, _ = ca.leaf(["a.test"], "porch-site")
    port = free_port()
    # a [[stream]] puts the Mux on the port (server/mux.py); no stream: the listener's own TLS
    stream = '\n[[stream]]\nsni = ["chat.example.com"]\npassthrough = "127.0.0.1:9"\n' if shared else ""
    p = porch(f'[[site]]\nhosts = ["a.test"]\nproxy = "{upstream().url}"\n'
              f'tls = {{ cert = "{cert}", key = "{key}" }}\n{stream}', https_port=port, workers=1)
    wait_for_port(port, p.managed, what="porch https")
    for version in ("--http1.1", "--http2"):
        r = curl_fetch(f"https://a.test:{port}/x", version, "--cacert", str(ca.ca_path), *resolve("a.test", port))
        assert r.status == 200, r
    # the path taken: Porch's transport is not even loaded in the workers
    (worker,) = p.wait_workers(1)
    maps = open(f"/proc/{worker}/maps").read()
    assert "tls_transport" not in maps and "_ssl" in maps
