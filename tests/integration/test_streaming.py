"""Big bodies stream through with bounded memory, whatever the client's speed."""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import time

from .helpers import GiB, MiB, RawConn, RSSSampler, get, pattern_block

RSS_LIMIT_KIB = 60 * 1024


def site(up_url: str) -> str:
    return f'[[site]]\nhosts = ["app.test"]\nproxy = "{up_url}"\n'


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_1gib_download_at_full_speed(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RSSSampler(p) as rss:
        proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", "Host: app.test",
                               "-w", "%{http_code} %{size_download}",
                               f"{p.url}/stream?size=1G"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"200 {GiB}"
    assert rss.samples > 3
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"


def test_1gib_chunked_download_whole(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RSSSampler(p) as rss:
        proc = subprocess.run(f"curl -sS -H 'Host: app.test' '{p.url}/stream?size=1G&chunked=1'"
                              " | sha256sum", shell=True, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == expected_sha(GiB)
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"


_SHA_CACHE: dict[int, str] = {}


def expected_sha(size: int) -> str:
    if size not in _SHA_CACHE:
        block = pattern_block(MiB)
        h = hashlib.sha256()
        for _ in range(size // MiB):
            h.update(block)
        _SHA_CACHE[size] = h.hexdigest()
    return _SHA_CACHE[size]


def test_slow_reader_keeps_memory_bounded(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    received = 0
    with RSSSampler(p) as rss, RawConn(p.port, timeout=10) as c:
        c.send(get("/stream?size=1G"))
        start = time.monotonic()
        while time.monotonic() - start < 5:
            # ~1 MiB/s: 64 KiB every 1/16 s.
            data = c.sock.recv(64 * 1024)
            assert data, "Porch closed the slow reader's connection"
            received += len(data)
            time.sleep(1 / 16)
        sent = up.stats()["stream_bytes_sent"]
    assert 2 * MiB < received < 8 * MiB
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"
    # Socket buffers on loopback may hold tens of MiB; without flow control the upstream
    # would have pushed the whole GiB by now.
    assert sent < 256 * MiB, f"upstream already sent {sent // MiB} MiB to a 1 MiB/s reader"


def test_1gib_upload(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    block = pattern_block(MiB)
    with RSSSampler(p) as rss, RawConn(p.port, timeout=60) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\n"
               b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % GiB)
        for _ in range(GiB // MiB):
            c.sock.sendall(block)
        r = c.read_response()
    assert r.status == 200
    doc = r.json()
    assert doc["body_length"] == GiB
    assert doc["body_sha256"] == expected_sha(GiB)
    assert rss.peak_kib < RSS_LIMIT_KIB, f"Porch RSS peaked at {rss.peak_kib // 1024} MiB"


def test_client_gone_mid_download_releases_everything(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:  # warm up: whatever Porch opens lazily, it has now
        c.send(get("/warm-up"))
        assert c.read_response().status == 200
    time.sleep(0.2)
    baseline = p.fd_count()

    c = RawConn(p.port, timeout=10)
    c.send(get("/stream?size=1G"))
    got = 0
    while got < 8 * MiB:
        data = c.sock.recv(256 * 1024)
        assert data
        got += len(data)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # abortive close: RST, like a browser tab closed mid-download

    assert wait_until(lambda: up.stats()["streams_open"] == 0, timeout=5), \
        f"upstream still streaming 5 s after the client left: {up.stats()}"
    assert up.stats()["streams_aborted"] == 1
    assert wait_until(lambda: p.fd_count() <= baseline, timeout=5), \
        f"Porch holds {p.fd_count()} fds, {baseline} before the download"


def test_client_gone_mid_download_graceful_close(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port, timeout=10) as c:
        c.send(get("/stream?size=1G"))
        got = 0
        while got < 4 * MiB:
            got += len(c.sock.recv(256 * 1024))
    # plain close (FIN) with unread data
    assert wait_until(lambda: up.stats()["streams_open"] == 0, timeout=5), \
        f"upstream still streaming 5 s after the client left: {up.stats()}"
    # Porch still serves.
    with RawConn(p.port) as c:
        c.send(get("/after"))
        assert c.read_response().status == 200
