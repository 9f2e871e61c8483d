"""Reload: `porch reload`, SIGHUP; a bad config keeps the old one; ports opened and closed;
old workers finish what they started (slow requests, long downloads, idle keep-alive
connections) up to drain_timeout.

Real processes on 127.0.0.1, each stopped by pid by the fixtures.
"""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import subprocess
import threading
import time

from .helpers import (
    PORCH_BIN,
    ClosedBeforeResponse,
    MiB,
    RawConn,
    curl_fetch,
    free_port,
    get,
    port_accepts,
    site,
    wait_until,
)
from .upstreams import pattern_sha256


def served_by(p, port: int | None = None) -> int:
    """The upstream port that answered a fresh request (upstreams.py echoes it)."""
    r = curl_fetch(f"http://127.0.0.1:{port or p.port}/", "-H", "Host: app.test", timeout=20)
    assert r.status == 200, (r.status, r.stderr)
    return r.json()["server_port"]


def test_reload_switches_to_the_new_upstream(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url), workers=2)
    old = p.wait_workers(2)
    assert served_by(p) == a.port
    p.write_config(site(b.url))
    r = p.reload()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reloaded" in r.stdout
    # Once `porch reload` returns, every new request reaches the new upstream.
    for _ in range(10):
        assert served_by(p) == b.port
    assert wait_until(lambda: not set(old) & set(p.workers()), timeout=5), "old workers still running"
    assert len(p.workers()) == 2
    assert re.search(r"\[info\] \d+: reloaded ", p.error_log_text())


def test_sighup_reloads_too(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    p.write_config(site(b.url))
    mark = p.error_log_mark()
    p.signal(signal.SIGHUP)
    p.error_log_text(wait_for="reloaded", since=mark, timeout=10)
    assert served_by(p) == b.port


def test_bad_config_is_reported_like_check_and_the_old_one_keeps_serving(upstream, porch):
    a = upstream()
    p = porch(site(a.url), workers=2)
    workers = p.wait_workers(2)
    p.write_config(site("htp://x"))
    r = p.reload()
    check = subprocess.run([str(PORCH_BIN), "check", "-c", str(p.config_path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr == check.stderr, (r.stderr, check.stderr)
    assert 'site[0].proxy: "htp://x"' in r.stderr
    assert sorted(p.workers()) == sorted(workers)
    assert served_by(p) == a.port


def test_supervisor_reports_a_bad_config_it_reads_on_sighup(upstream, porch):
    a = upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    p.write_config(site(a.url, extra="max_body = \"20Q\"\n"))
    mark = p.error_log_mark()
    p.signal(signal.SIGHUP)
    text = p.error_log_text(wait_for="reload failed", since=mark, timeout=10)
    assert re.search(r'\[error\] \d+: reload failed, still serving the previous config: porch: \S+: '
                     r'configuration is not valid:; site\[0\]\.max_body: "20Q" is not a size', text), text
    assert served_by(p) == a.port


def test_reload_opens_new_ports_and_closes_old_ones(upstream, porch):
    a = upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    new_port = free_port()
    p.write_config(site(a.url), http_port=new_port)
    r = p.reload()
    assert r.returncode == 0, r.stderr
    assert served_by(p, new_port) == a.port
    assert wait_until(lambda: not port_accepts(p.port), timeout=5), "the old port still accepts"


def test_reload_to_a_port_in_use_fails_and_keeps_serving(upstream, porch):
    a = upstream()
    p = porch(site(a.url))
    workers = p.wait_workers(1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        p.write_config(site(a.url), http_port=busy)
        r = p.reload()
    assert r.returncode == 1
    assert re.search(rf"reload failed, still serving the previous config: cannot listen on 127\.0\.0\.1:{busy}: "
                     r"Address already in use", r.stderr), r.stderr
    assert p.workers() == workers
    assert served_by(p) == a.port


def test_worker_that_cannot_start_fails_the_reload(upstream, porch, tmp_path):
    a, b = upstream(), upstream()
    p = porch(site(a.url), workers=2)
    workers = p.wait_workers(2)
    p.write_config(site(b.url), access_log=str(tmp_path / "no" / "such" / "dir" / "access.log"))
    r = p.reload()
    assert r.returncode == 1
    assert "cannot open" in r.stderr and "No such file or directory" in r.stderr, r.stderr
    assert sorted(p.workers()) == sorted(workers)
    assert served_by(p) == a.port


def test_reload_without_a_running_porch(tmp_path):
    config = tmp_path / "porch.toml"
    config.write_text(f'[porch]\nstate_dir = "{tmp_path / "state"}"\n' + site("http://127.0.0.1:1"))
    r = subprocess.run([str(PORCH_BIN), "reload", "-c", str(config)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "no porch is running with state_dir" in r.stderr, r.stderr


def test_reload_of_another_file_than_the_one_served_is_refused(upstream, porch):
    a = upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    other = p.config_path.with_name("other.toml")
    other.write_text(p.config_path.read_text())
    r = subprocess.run([str(PORCH_BIN), "reload", "-c", str(other)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert f"serves {p.config_path}, not {other}" in r.stderr, r.stderr


def test_requests_in_flight_finish_on_the_old_worker(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    c = RawConn(p.port, timeout=15)
    c.send(get("/slow?delay=1.5"))
    assert wait_until(lambda: a.stats()["requests"] >= 1, timeout=5)
    p.write_config(site(b.url))
    assert p.reload().returncode == 0
    r = c.read_response()
    assert r.status == 200 and r.json()["server_port"] == a.port
    assert r.header("Connection") == "close", "a drained connection must say it closes"
    assert c.closed_by_peer(timeout=3)
    c.close()


def test_long_download_started_before_a_reload_completes_whole(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    size = 128 * MiB
    result = {}

    def download() -> None:
        # --limit-rate: it lasts about 8 s, across the reload
        result["r"] = curl_fetch(f"{p.url}/stream?size={size}", "-H", "Host: app.test",
                                 "--limit-rate", "16M", timeout=60)

    t = threading.Thread(target=download)
    t.start()
    assert wait_until(lambda: a.stats().get("streams_open", 0) >= 1, timeout=5)
    p.write_config(site(b.url))
    assert p.reload().returncode == 0
    assert a.stats()["streams_open"] == 1, "the download ended before the reload was done: make it longer"
    assert served_by(p) == b.port
    t.join(timeout=60)
    r = result["r"]
    assert r.rc == 0 and r.status == 200, (r.rc, r.stderr)
    assert len(r.body) == size
    assert hashlib.sha256(r.body).hexdigest() == pattern_sha256(size)


def test_idle_keepalive_connection_is_closed_after_reload(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    with RawConn(p.port, timeout=5) as c:
        c.send(get("/"))
        assert c.read_response().status == 200
        p.write_config(site(b.url))
        assert p.reload().returncode == 0
        assert c.closed_by_peer(timeout=3), "idle keep-alive connection of an old worker not closed"


def test_request_right_after_reload_on_a_kept_alive_connection_is_answered_with_close(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url))
    p.wait_workers(1)
    with RawConn(p.port, timeout=5) as c:
        c.send(get("/"))
        assert c.read_response().status == 200
        p.write_config(site(b.url))
        assert p.reload().returncode == 0
        # within the half second of grace an old worker gives idle connections
        c.send(get("/"))
        r = c.read_response()
        assert r.status == 200 and r.header("Connection") == "close", r
        assert c.closed_by_peer(timeout=3)


def test_drain_timeout_cuts_what_old_workers_still_do(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url), drain_timeout="1s")
    (old,) = p.wait_workers(1)
    c = RawConn(p.port, timeout=15)
    c.send(get("/slow?delay=8"))
    assert wait_until(lambda: a.stats()["requests"] >= 1, timeout=5)
    p.write_config(site(b.url))
    assert p.reload().returncode == 0
    t0 = time.monotonic()
    try:
        r = c.read_response()
    except ClosedBeforeResponse:
        pass
    else:
        assert r.status != 200, "a request longer than drain_timeout was not cut"
    assert time.monotonic() - t0 < 4
    assert wait_until(lambda: old not in p.workers(), timeout=5)
    c.close()


def test_reload_that_adds_a_tls_site_opens_the_https_port(upstream, porch):
    a = upstream()
    p = porch(site(a.url), workers=2)
    p.wait_workers(2)
    https = free_port()
    assert not port_accepts(https)
    p.write_config(site(a.url, 'tls = "internal"\n', host="localhost"), https_port=https, tls=None)
    r = p.reload()
    assert r.returncode == 0, r.stderr
    for _ in range(4):  # new connections: both workers serve https
        res = curl_fetch(f"https://localhost:{https}/", "-k", "--resolve", f"localhost:{https}:127.0.0.1")
        assert res.rc == 0 and res.status == 200, res.stderr
        assert res.json()["server_port"] == a.port


def test_reload_changing_the_number_of_workers_keeps_every_connection_served(upstream, porch):
    """Each worker has its own SO_REUSEPORT socket: with fewer workers after a reload,
    the remaining ones serve the extra sockets too, so no connection waits unanswered."""
    a = upstream()
    p = porch(site(a.url), workers=2)
    p.wait_workers(2)
    for workers in (3, 1):
        p.write_config(site(a.url), workers=workers)
        r = p.reload()
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: len(p.workers()) == workers, timeout=10), p.workers()
        for _ in range(30):  # new connections land on every socket of the group
            with RawConn(p.port, timeout=3) as c:
                c.send(get("/", extra="Connection: close\r\n"))
                assert c.read_response().status == 200
