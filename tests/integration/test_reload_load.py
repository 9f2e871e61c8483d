"""Reload under load: 20 reloads in a row while clients send steady traffic, with and
without keep-alive, and a long download runs across them.

What must hold (issue 3): no connection refused, no connection reset or closed under a
request, no 5xx; after each reload, requests on new connections reach the upstream the
new config names; a connection opened before a reload gets at most one more answer
from the old config, and that answer says `Connection: close`; the download completes
whole.  bench/reload.py does the same with wrk, for figures.

Real processes on 127.0.0.1, each stopped by pid by the fixtures.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .helpers import ClosedBeforeResponse, MiB, RawConn, curl_fetch, get, site, wait_until
from .upstreams import pattern_sha256

RELOADS = 20
KEEPALIVE_CLIENTS = 3
CLOSE_CLIENTS = 2


@dataclass
class Tally:
    """What the clients saw; `problems` keeps the first few failures' details."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    # (connection id, when it was opened, when the request was sent, upstream port,
    # whether the answer said Connection: close), times from time.monotonic()
    answers: list[tuple[int, float, float, int, bool]] = field(default_factory=list)
    connections: int = 0

    def fail(self, kind: str, detail: str) -> None:
        with self.lock:
            self.counts[kind] += 1
            if len(self.problems) < 10:
                self.problems.append(f"{kind}: {detail}")

    def ok(self, conn: int, opened: float, sent: float, port: int, close: bool) -> None:
        with self.lock:
            self.counts["ok"] += 1
            self.answers.append((conn, opened, sent, port, close))

    def new_connection(self) -> int:
        with self.lock:
            self.connections += 1
            return self.connections


def client(port: int, keepalive: bool, stop: threading.Event, tally: Tally) -> None:
    """Requests one after the other until `stop`; a new connection per request without
    keep-alive, or whenever the server says Connection: close."""
    conn: RawConn | None = None
    opened = 0.0
    conn_id = 0
    extra = "" if keepalive else "Connection: close\r\n"
    while not stop.is_set():
        try:
            if conn is None:
                opened = time.monotonic()
                conn = RawConn(port, timeout=10)
                conn_id = tally.new_connection()
            sent = time.monotonic()
            conn.send(get("/", extra=extra))
            r = conn.read_response()
        except ConnectionRefusedError as e:
            tally.fail("refused", repr(e))
            conn = None
            continue
        except (ClosedBeforeResponse, ConnectionResetError, BrokenPipeError) as e:
            tally.fail("reset", f"{type(e).__name__} {e} (connection opened {time.monotonic() - opened:.3f}s before)")
            conn.close()
            conn = None
            continue
        except (OSError, ValueError) as e:
            tally.fail("other", repr(e))
            if conn is not None:
                conn.close()
            conn = None
            continue
        close = (r.header("Connection") or "").lower() == "close"
        if r.status >= 500:
            tally.fail("5xx", f"{r.status} {r.body[:200]!r}")
        elif r.status != 200:
            tally.fail("other", f"status {r.status}")
        else:
            tally.ok(conn_id, opened, sent, r.json()["server_port"], close)
        if close or not keepalive:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def test_twenty_reloads_under_steady_traffic_lose_nothing(upstream, porch):
    a, b = upstream(), upstream()
    p = porch(site(a.url), workers=2)
    p.wait_workers(2)

    # A long download across all the reloads (about 10 s at 20 MB/s).
    size = 200 * MiB
    download = {}

    def fetch() -> None:
        download["r"] = curl_fetch(f"{p.url}/stream?size={size}", "-H", "Host: app.test",
                                   "--limit-rate", "20M", timeout=120)

    downloader = threading.Thread(target=fetch)
    downloader.start()
    assert wait_until(lambda: a.stats().get("streams_open", 0) >= 1, timeout=10)

    stop = threading.Event()
    tally = Tally()
    clients = [threading.Thread(target=client, args=(p.port, True, stop, tally)) for _ in range(KEEPALIVE_CLIENTS)]
    clients += [threading.Thread(target=client, args=(p.port, False, stop, tally)) for _ in range(CLOSE_CLIENTS)]
    for t in clients:
        t.start()
    time.sleep(0.5)

    # Reloads: the upstream alternates b, a, b, ... (every reload changes it).
    # (when `porch reload` began, when it returned, the upstream it named)
    reloads: list[tuple[float, float, int]] = []
    try:
        for i in range(RELOADS):
            up = b if i % 2 == 0 else a
            p.write_config(site(up.url))
            began = time.monotonic()
            r = p.reload()
            assert r.returncode == 0, f"reload {i + 1}: {r.stdout}{r.stderr}"
            reloads.append((began, time.monotonic(), up.port))
            # A request on a new connection right after the reload: the new upstream.
            with RawConn(p.port, timeout=10) as c:
                c.send(get("/", extra="Connection: close\r\n"))
                resp = c.read_response()
            assert resp.status == 200 and resp.json()["server_port"] == up.port, \
                f"after reload {i + 1}, a new connection reached {resp.json()['server_port']}, not {up.port}"
            time.sleep(0.2)  # steady traffic between reloads too
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=20)

    downloader.join(timeout=120)
    counts = tally.counts
    failures = {k: v for k, v in counts.items() if k != "ok"}
    print(f"\n{counts['ok']} answers, failures {failures or 'none'} over {RELOADS} reloads")
    assert not failures, f"failures: {failures}\n" + "\n".join(tally.problems)
    assert counts["ok"] > 20 * RELOADS, f"too little traffic to prove anything: {counts}"

    # After each reload returned, a new connection reached its upstream (until the next
    # reload began: then either config may answer).
    for k, (_, done, port) in enumerate(reloads):
        t_next = reloads[k + 1][0] if k + 1 < len(reloads) else float("inf")
        for _, opened, sent, got, _ in tally.answers:
            if done <= opened and sent < t_next:
                assert got == port, f"reload {k + 1}: a connection opened after it reached {got}, not {port}"
    # A connection an old worker holds gets at most one answer for a request sent after
    # the reload returned, and that answer says Connection: close.
    late: Counter = Counter()
    for conn, opened, sent, got, close in tally.answers:
        j = next((j for j, (_, done, _) in enumerate(reloads) if done > opened), None)
        if j is None or sent < reloads[j][1]:
            continue  # opened after the last reload, or sent before the reload returned
        began, _, port = reloads[j]
        if opened >= began and got == port:
            continue  # opened while reload j ran, and accepted by one of its new workers
        assert close, f"connection {conn}, opened before reload {j + 1}, kept alive after it"
        late[conn] += 1
    assert all(n == 1 for n in late.values()), f"old connections answered more than once: {late}"

    r = download["r"]
    assert r.rc == 0 and r.status == 200, (r.rc, r.stderr)
    assert len(r.body) == size and hashlib.sha256(r.body).hexdigest() == pattern_sha256(size)
    # Old workers are gone once drained (the downloader's one finished with it).
    assert wait_until(lambda: len(p.workers()) == 2, timeout=10), p.workers()
