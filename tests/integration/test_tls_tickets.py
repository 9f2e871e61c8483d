"""TLS session tickets shared by the workers (issue 16, tls/tickets.py): a session from
one worker resumes on every worker, over TLS 1.2 and TLS 1.3, and across a reload.

Porch with workers = 2 and one HTTPS site; clients are Python's ssl module (a session
offered again and again) and `openssl s_client -sess_out` / `-sess_in`.  Which worker
took a connection is read from the kernel: the server end of the client's TCP
connection (/proc/net/tcp, by the client's port) is a socket inode that one worker's
/proc/PID/fd holds.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess

import pytest

from .helpers import site, wait_until
from .test_tls import TlsConn, certs, client_context, files, tls_porch  # noqa: F401 (fixture)

V = ssl.TLSVersion
VERSIONS = [pytest.param(V.TLSv1_2, id="tls1.2"), pytest.param(V.TLSv1_3, id="tls1.3")]
CONNECTIONS = 24  # over 2 SO_REUSEPORT sockets: all on one worker has odds of 2**-23


def server_inode(port: int, client_port: int) -> int | None:
    """The inode of Porch's end of the loopback connection from `client_port`."""
    local, remote = f"0100007F:{port:04X}", f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[9])
    return None


def worker_of(conn: TlsConn, port: int, pids: list[int]) -> int:
    """The pid of the worker holding `conn`'s server end."""
    inode = server_inode(port, conn.sock.getsockname()[1])
    assert inode, "the server end of the connection is not in /proc/net/tcp"
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                pass
    raise AssertionError(f"no worker of {pids} holds {target}")


def first_session(p, ctx: ssl.SSLContext) -> ssl.SSLSession:
    with TlsConn(p.https_port, "a.test", None, context=ctx) as c:
        assert c.request(host="a.test").status == 200  # the TLS 1.3 tickets come with it
        assert not c.sock.session_reused
        return c.sock.session


def resume_many(p, ctx: ssl.SSLContext, session: ssl.SSLSession, pids: list[int]) -> dict[int, int]:
    """CONNECTIONS connections offering `session`: each must resume; {worker pid: count}."""
    hits: dict[int, int] = {}
    for i in range(CONNECTIONS):
        with TlsConn(p.https_port, "a.test", None, context=ctx, session=session) as c:
            assert c.sock.session_reused, f"connection {i + 1} did a full handshake"
            assert c.request(host="a.test").status == 200
            pid = worker_of(c, p.https_port, pids)
            hits[pid] = hits.get(pid, 0) + 1
    return hits


@pytest.mark.parametrize("version", VERSIONS)
def test_a_session_resumes_on_both_workers_and_after_a_reload(porch, upstream, certs, version):  # noqa: F811
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"), workers=2)
    pids = p.wait_workers(2)
    ctx = client_context(certs.ca_path, (version, version))
    session = first_session(p, ctx)
    hits = resume_many(p, ctx, session, pids)
    assert set(hits) == set(pids), f"every connection went to one worker: {hits}"
    # A reload: new workers, the same key (the supervisor's secret), the same session
    assert p.reload().returncode == 0
    assert wait_until(lambda: not set(p.workers()) & set(pids), timeout=20), p.workers()
    new = p.wait_workers(2)
    hits = resume_many(p, ctx, session, new)
    assert set(hits) == set(new), f"every connection went to one worker: {hits}"
    assert "session tickets" not in p.error_log_text()  # no fallback warning here


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_sess_out_then_sess_in_is_reused_every_time(porch, upstream, certs, tmp_path, flag):  # noqa: F811
    up = upstream()
    cert, key, _ = certs.leaf(["a.test"], "a")
    p = tls_porch(porch, site(up.url, files(cert, key), host="a.test"), workers=2)
    p.wait_workers(2)
    sess = tmp_path / "session.pem"
    request = "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"

    def s_client(*args: str) -> str:
        # -ign_eof: read until Porch closes, so the TLS 1.3 tickets are read too
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{p.https_port}",
                              "-servername", "a.test", flag, "-ign_eof", *args],
                             input=request, capture_output=True, text=True, timeout=20)
        assert "HTTP/1.1 200" in out.stdout, out.stdout + out.stderr
        return out.stdout

    assert re.search(r"^New, TLSv1\.[23]", s_client("-sess_out", str(sess)), re.M)
    for _ in range(12):  # over two workers: all on one has odds of 2**-11
        assert re.search(r"^Reused, TLSv1\.[23]", s_client("-sess_in", str(sess)), re.M)
