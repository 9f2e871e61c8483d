"""The process model: a supervisor that holds the sockets and `workers` worker processes.

Workers serve, die and come back (with backoff when they keep dying); SIGTERM drains
them all; SIGQUIT and a second SIGINT stop at once; a supervisor killed outright does
not leave workers behind; two porches cannot share a state_dir; several workers
writing one access log never split a line.

Real processes on 127.0.0.1, each stopped by pid by the fixtures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

from .helpers import (
    PORCH_BIN,
    RawConn,
    curl_fetch,
    get,
    port_accepts,
    site,
    wait_until,
)


def ok(p, path: str = "/") -> bool:
    return curl_fetch(f"{p.url}{path}", "-H", "Host: app.test", timeout=20).status == 200


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_are_started_and_all_accept(upstream, porch):
    up = upstream()
    p = porch(site(up.url), workers=2)
    pids = p.wait_workers(2)
    assert p.pid not in pids
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"porch.server.worker" in f.read()
    # Connections held open are spread over the workers: each holds some.
    conns = []
    try:
        for _ in range(40):
            c = RawConn(p.port, timeout=5)
            c.send(get("/"))
            assert c.read_response().status == 200
            conns.append(c)
        held = {pid: _tcp_sockets(pid) for pid in pids}
        assert all(n > 0 for n in held.values()), f"a worker holds no connection: {held}"
    finally:
        for c in conns:
            c.close()


def _tcp_sockets(pid: int) -> int:
    """Sockets a process has open (listening and connected ones)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n - 2  # the listening socket and the control channel


def test_workers_auto_is_one_per_cpu(upstream, porch):
    up = upstream()
    p = porch(site(up.url), workers="auto")
    p.wait_workers(len(os.sched_getaffinity(0)))
    assert ok(p)


def test_killed_worker_is_restarted_with_its_exit_cause_logged(upstream, porch):
    up = upstream()
    p = porch(site(up.url), workers=2)
    pids = p.wait_workers(2)
    mark = p.error_log_mark()
    os.kill(pids[0], signal.SIGKILL)
    text = p.error_log_text(wait_for=r"exited unexpectedly", since=mark)
    assert re.search(rf"worker \d \(pid {pids[0]}\) exited unexpectedly \(killed by SIGKILL\); restarting",
                     text), text
    assert wait_until(lambda: len(p.workers()) == 2 and pids[0] not in p.workers(), timeout=10), p.workers()
    assert pids[1] in p.workers(), "the other worker was restarted too"
    for _ in range(10):
        assert ok(p)


def test_worker_that_keeps_dying_is_restarted_with_backoff(upstream, porch, tmp_path):
    """Restarts fail while the access log's directory is gone: the supervisor waits
    longer each time, then serves again once the directory is back."""
    up = upstream()
    logs = tmp_path / "logs"
    logs.mkdir()
    p = porch(site(up.url), workers=1, access_log=str(logs / "access.log"))
    (pid,) = p.wait_workers(1)
    mark = p.error_log_mark()
    for f in logs.iterdir():
        f.unlink()
    logs.rmdir()
    os.kill(pid, signal.SIGKILL)
    text = p.error_log_text(wait_for=r"restarting in 2s", since=mark, timeout=10)
    lines = [ln for ln in text.splitlines() if "exited unexpectedly" in ln]
    assert len(lines) >= 3, text
    assert "(killed by SIGKILL); restarting it" in lines[0], lines[0]
    assert re.search(r"\(exit code 1: cannot open \S*access\.log: No such file or directory\); "
                     r"restarting in 1s \(2 exits in a row", lines[1]), lines[1]
    assert "restarting in 2s (3 exits in a row" in lines[2], lines[2]
    # Not a tight loop: 3 attempts in the first ~3 s, not hundreds.
    time.sleep(1.0)
    text = p.error_log_text(since=mark)
    assert text.count("exited unexpectedly") <= 5, text
    logs.mkdir()
    # The next attempt (at most 4 s later) works; requests queued meanwhile are served.
    t0 = time.monotonic()
    assert curl_fetch(f"{p.url}/", "-H", "Host: app.test", timeout=20).status == 200
    assert time.monotonic() - t0 < 10
    assert len(p.workers()) == 1


def test_sigterm_with_two_workers_drains_in_flight_requests_and_exits_0(upstream, porch):
    up = upstream()
    p = porch(site(up.url), workers=2)
    p.wait_workers(2)
    conns = []
    for _ in range(4):  # on both workers, most likely; each request in flight
        c = RawConn(p.port, timeout=15)
        c.send(get("/slow?delay=1.5"))
        conns.append(c)
    assert wait_until(lambda: up.stats()["requests"] >= 4, timeout=5)
    workers = p.workers()
    p.signal(signal.SIGTERM)
    assert wait_until(lambda: not port_accepts(p.port), timeout=1.0), "still accepting 1 s after SIGTERM"
    for c in conns:
        r = c.read_response()
        assert r.status == 200 and r.header("Connection") == "close", r
        c.close()
    assert p.wait(timeout=5) == 0, p.managed.output()
    assert not any(alive(pid) for pid in workers), "a worker outlived the supervisor"


def test_sigquit_stops_at_once(upstream, porch):
    up = upstream()
    p = porch(site(up.url), workers=2)
    workers = p.wait_workers(2)
    c = RawConn(p.port, timeout=10)
    c.send(get("/slow?delay=5"))
    assert wait_until(lambda: up.stats()["requests"] >= 1, timeout=5)
    t0 = time.monotonic()
    p.signal(signal.SIGQUIT)
    code = p.wait(timeout=4)
    assert time.monotonic() - t0 < 3
    assert code != 0
    assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=3)
    c.close()


def test_second_sigint_stops_at_once(upstream, porch):
    up = upstream()
    p = porch(site(up.url), workers=2)
    p.wait_workers(2)
    c = RawConn(p.port, timeout=10)
    c.send(get("/slow?delay=8"))
    assert wait_until(lambda: up.stats()["requests"] >= 1, timeout=5)
    p.signal(signal.SIGINT)
    time.sleep(0.3)
    assert p.managed.running(), "the first SIGINT must drain, not stop at once"
    t0 = time.monotonic()
    p.signal(signal.SIGINT)
    p.wait(timeout=4)
    assert time.monotonic() - t0 < 3
    c.close()


def test_workers_stop_when_the_supervisor_is_killed(upstream, porch):
    up = upstream()
    p = porch(site(up.url), workers=2)
    workers = p.wait_workers(2)
    os.kill(p.pid, signal.SIGKILL)
    p.managed.proc.wait(timeout=5)
    assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=5), \
        "workers kept running without their supervisor"


def test_second_porch_on_the_same_state_dir_refuses_to_start(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    p.wait_workers(1)
    other = p.config_path.with_name("other.toml")
    other.write_text(p.config_path.read_text().replace(f"http_port = {p.port}", "http_port = 1"))
    r = subprocess.run([str(PORCH_BIN), "run", "-c", str(other)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert f"another porch (pid {p.pid}) runs with state_dir" in r.stderr, r.stderr
    assert ok(p)


def test_several_workers_never_split_access_log_lines(upstream, porch):
    """Two workers append to one access log under load: every line is whole."""
    up = upstream()
    p = porch(site(up.url), workers=2, access_log_format="json")
    p.wait_workers(2)
    long_ua = "agent-" + "x" * 3000  # lines of ~3 KiB: a batch is many of them
    counts = []

    def client(n: int) -> None:
        done = 0
        for _ in range(n):
            with RawConn(p.port, timeout=10) as c:  # new connections: both workers take some
                c.send(get("/", extra=f"User-Agent: {long_ua}\r\n"))
                done += c.read_response().status == 200
        counts.append(done)

    threads = [threading.Thread(target=client, args=(150,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 600
    p.stop()
    lines = p.access_log_path.read_text().splitlines()
    assert len(lines) == 600
    for line in lines:
        record = json.loads(line)  # a split line is not JSON
        assert record["user_agent"] == long_ua


def test_connections_for_a_dead_worker_are_served_by_another_while_it_restarts(upstream, porch, tmp_path):
    """Each worker accepts on its own socket; while one cannot be restarted (backoff),
    another accepts on its socket too: no new connection waits for the restart."""
    up = upstream()
    logs = tmp_path / "logs"
    logs.mkdir()
    p = porch(site(up.url), workers=2, access_log=str(logs / "access.log"))
    pids = p.wait_workers(2)
    mark = p.error_log_mark()
    for f in logs.iterdir():
        f.unlink()
    logs.rmdir()  # restarts fail from now on
    os.kill(pids[0], signal.SIGKILL)
    p.error_log_text(wait_for=r"restarting in 1s", since=mark, timeout=10)
    t0 = time.monotonic()
    for _ in range(40):  # the kernel sends about half of them to the dead worker's socket
        with RawConn(p.port, timeout=3) as c:
            c.send(get("/", extra="Connection: close\r\n"))
            assert c.read_response().status == 200
    assert time.monotonic() - t0 < 10
    logs.mkdir()
    assert wait_until(lambda: len(p.workers()) == 2, timeout=15), p.workers()
    p.error_log_text(wait_for=r"porch serving|restarting", since=mark)
    for _ in range(20):
        with RawConn(p.port, timeout=3) as c:
            c.send(get("/", extra="Connection: close\r\n"))
            assert c.read_response().status == 200
