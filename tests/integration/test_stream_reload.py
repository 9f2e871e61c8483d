"""Reload with port sharing: a passthrough in progress stays on the old worker until
drain_timeout, then is closed with a log line; new connections follow the new
[[stream]]s (also one the reload adds); a connection not yet routed when the drain
ends is closed with a log line too.  Real processes, stopped by pid by the fixtures."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .helpers import free_port, wait_for_port, wait_until
from .test_port_sharing import ca, read_line, serial, target, tls_client  # noqa: F401 (fixtures)
from .tlscerts import TestCA

HELLO = Path(__file__).parent.parent / "unit/data/clienthello/openssl_xmpp_sni.bin"


def site(up_url: str, ca: TestCA) -> str:
    cert, key, _ = ca.leaf(["a.test"], "porch-site")
    return f'[[site]]\nhosts = ["a.test"]\nproxy = "{up_url}"\ntls = {{ cert = "{cert}", key = "{key}" }}\n\n'


def stream(passthrough: str, **keys: str) -> str:
    extra = "".join(f'{k} = {v}\n' for k, v in keys.items())
    return f'[[stream]]\n{extra}passthrough = "{passthrough}"\n\n'


def served_by(pid: int, local_port: int, peer_port: int) -> bool:
    """True when process `pid` holds the server side of the TCP connection
    127.0.0.1:local_port <- 127.0.0.1:peer_port (/proc/net/tcp, /proc/PID/fd)."""
    want = (f"0100007F:{local_port:04X}", f"0100007F:{peer_port:04X}")
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                inode = fields[9]
    if inode is None:
        return False
    fd_dir = f"/proc/{pid}/fd"
    try:
        return any(os.readlink(f"{fd_dir}/{fd}") == f"socket:[{inode}]" for fd in os.listdir(fd_dir))
    except FileNotFoundError:
        return False


def test_passthrough_survives_reload_until_drain_timeout_and_new_streams_apply(porch, upstream, target, ca,
                                                                               tmp_path):
    a, b = target("named"), target("named")
    xmpp_ca = TestCA(tmp_path, "XMPP CA")
    xcert, xkey, xserial = xmpp_ca.leaf(["chat.example.com"], "xmpp")
    xmpp = target("tls", (xcert, xkey))
    up = upstream().url
    https = free_port()
    p = porch(site(up, ca) + stream(a.address, protocol='"any"'), https_port=https, drain_timeout="4s")
    wait_for_port(https, p.managed, what="porch https")
    (old,) = p.wait_workers(1)
    before = socket.create_connection(("127.0.0.1", https), timeout=20)
    before.sendall(b"one\n")
    reader = before.makefile("rb")
    assert reader.readline() == f"target {a.port}\n".encode()
    assert reader.readline() == b"one\n"

    p.write_config(site(up, ca) + stream(xmpp.address, alpn='["xmpp-client"]') + stream(b.address, protocol='"any"'))
    reload = p.reload()
    assert reload.returncode == 0, reload.stdout + reload.stderr
    reloaded = time.monotonic()
    # the passthrough in progress goes on, to the target it started with
    before.sendall(b"two\n")
    assert reader.readline() == b"two\n"
    # new connections follow the new config: the changed stream and the added one
    with socket.create_connection(("127.0.0.1", https), timeout=5) as s:
        s.sendall(b"three\n")
        assert s.makefile("rb").readline() == f"target {b.port}\n".encode()
    with tls_client(https, "chat.example.com", ["xmpp-client"], xmpp_ca.ca_path) as s:
        assert serial(s) == xserial
        assert b'"alpn": "xmpp-client"' in read_line(s)
    before.sendall(b"four\n")
    assert reader.readline() == b"four\n"
    # drain_timeout (4 s) over: the old worker closes it, and says so
    assert reader.readline() == b""
    assert 3.0 <= time.monotonic() - reloaded < 12
    before.close()
    log = p.error_log_text(wait_for="closed at the end of drain_timeout")
    assert f"passthrough to {a.address} closed at the end of drain_timeout" in log, log
    assert wait_until(lambda: old not in p.workers(), timeout=10)
    lines = [ln for ln in p.access_log_lines(4) if f"-> {a.address}" in ln]
    assert len(lines) == 1 and '"PASSTHROUGH stream[0] any -> ' in lines[0], lines


def test_connection_not_routed_when_the_drain_ends_is_closed_with_a_log_line(porch, upstream, target, ca):
    t = target("echo")
    https = free_port()
    p = porch(site(upstream().url, ca) + stream(t.address, alpn='["xmpp-client"]'), https_port=https,
              header_timeout="60s", drain_timeout="1s")
    wait_for_port(https, p.managed, what="porch https")
    (old,) = p.wait_workers(1)
    s = socket.create_connection(("127.0.0.1", https), timeout=20)
    s.sendall(HELLO.read_bytes()[:40])  # a hello that never ends: the Mux waits for the rest
    assert wait_until(lambda: served_by(old, https, s.getsockname()[1]), timeout=5)
    assert p.reload().returncode == 0
    start = time.monotonic()
    assert s.recv(100) == b""  # closed at the end of drain_timeout, not of header_timeout
    assert time.monotonic() - start < 10
    s.close()
    log = p.error_log_text(wait_for="undecided")
    assert "connection closed undecided at the end of drain_timeout (40 bytes read)" in log, log
