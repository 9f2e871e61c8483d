"""Clean errors: 502, 504, 413, 408, 431 with short bodies and a log line saying why."""

from __future__ import annotations

import socket
import threading
import time

from .helpers import RawConn, assert_short_error_body, curl_fetch, refused_port


def site(proxy: str, extra: str = "") -> str:
    return f'[[site]]\nhosts = ["app.test"]\nproxy = "{proxy}"\n{extra}'


def test_upstream_refused_is_502(porch):
    dead = refused_port()
    p = porch(site(f"http://127.0.0.1:{dead}"))
    mark = p.error_log_mark()
    r = curl_fetch(f"{p.url}/", "-H", "Host: app.test")
    assert r.status == 502
    assert_short_error_body(r.body)
    log = p.error_log_text(wait_for="refused", since=mark)
    assert "refused" in log.lower(), log


def test_unresolvable_upstream_is_502_and_porch_starts(porch):
    p = porch(site("http://does-not-exist.invalid:80"))
    mark = p.error_log_mark()
    r = curl_fetch(f"{p.url}/", "-H", "Host: app.test")
    assert r.status == 502
    assert_short_error_body(r.body)
    log = p.error_log_text(wait_for=r"does-not-exist\.invalid|resolv", since=mark)
    assert "does-not-exist.invalid" in log or "resolv" in log.lower(), log


def test_upstream_never_answering_is_504(upstream, porch):
    up = upstream("hang")
    p = porch(site(up.url, 'upstream_timeout = "1s"\n'))
    mark = p.error_log_mark()
    r = curl_fetch(f"{p.url}/", "-H", "Host: app.test", "-m", "15")
    assert r.status == 504
    assert 0.9 <= r.elapsed < 5, f"504 after {r.elapsed:.1f}s with upstream_timeout = 1s"
    assert_short_error_body(r.body)
    log = p.error_log_text(wait_for="time", since=mark)
    assert "timeout" in log.lower() or "timed out" in log.lower(), log


def test_upstream_not_reading_the_request_body_is_504(porch):
    """An upstream that accepts and never reads: the upload stalls on it, and after
    upstream_timeout without it taking a byte the client gets 504 (nginx
    proxy_send_timeout), not a request hanging for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        p = porch(site(f"http://127.0.0.1:{listener.getsockname()[1]}", 'upstream_timeout = "1s"\n'))
        mark = p.error_log_mark()
        with RawConn(p.port, timeout=15) as c:
            c.send(b"PUT /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1073741824\r\n\r\n")
            start = time.monotonic()
            chunk = b"x" * 65536
            c.sock.settimeout(0.2)
            sent = 0
            while time.monotonic() - start < 10:  # push until Porch stops taking it
                try:
                    sent += c.sock.send(chunk)
                except (socket.timeout, BlockingIOError):
                    break
            c.sock.settimeout(15)
            r = c.read_response()
        assert r.status == 504 and time.monotonic() - start < 8
        assert sent < 64 * 1024 * 1024  # held back, not buffered
        log = p.error_log_text(wait_for="request body", since=mark)
        assert "took none of the request body" in log, log
    finally:
        listener.close()


def test_declared_body_over_max_body_is_413_at_once(upstream, porch):
    up = upstream()
    p = porch(site(up.url, 'max_body = "1M"\n'))
    mark = p.error_log_mark()
    with RawConn(p.port, timeout=3) as c:
        # Only the head: the verdict must not wait for 2 MB that never come.
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2000000\r\n\r\n")
        r = c.read_response()
    assert r.status == 413
    assert_short_error_body(r.body)
    assert up.stats()["requests"] == 0
    log = p.error_log_text(wait_for="413|large|max_body", since=mark)
    assert any(w in log.lower() for w in ("413", "large", "max_body")), log


def test_chunked_body_over_max_body_is_413(upstream, porch):
    up = upstream()
    p = porch(site(up.url, 'max_body = "1M"\n'))
    mark = p.error_log_mark()
    with RawConn(p.port, timeout=5) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n")

        def send_body():
            chunk = b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
            try:
                for _ in range(24):  # 1.5 MiB
                    c.sock.sendall(chunk)
                c.sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # Porch may stop reading once it has said 413

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        r = c.read_response()
        sender.join(5)
    assert r.status == 413
    assert_short_error_body(r.body)
    log = p.error_log_text(wait_for="413|large|max_body", since=mark)
    assert any(w in log.lower() for w in ("413", "large", "max_body")), log


def test_body_under_max_body_passes(upstream, porch):
    up = upstream()
    p = porch(site(up.url, 'max_body = "1M"\n'))
    r = curl_fetch(f"{p.url}/upload", "-H", "Host: app.test", "--data-binary", "x" * 1000)
    assert r.status == 200
    assert r.json()["body_length"] == 1000


def test_slow_request_head_is_408(upstream, porch):
    up = upstream()
    p = porch(site(up.url, 'header_timeout = "1s"\n'))
    mark = p.error_log_mark()
    with RawConn(p.port, timeout=6) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: app.te")
        start = time.monotonic()
        r = c.read_response()
        elapsed = time.monotonic() - start
        assert r.status == 408
        assert 0.9 <= elapsed < 4, f"408 after {elapsed:.1f}s with header_timeout = 1s"
        assert_short_error_body(r.body)
        assert c.closed_by_peer(timeout=3)
    log = p.error_log_text(wait_for="time", since=mark)
    assert "timeout" in log.lower() or "timed out" in log.lower(), log


def test_stalled_request_body_is_408(upstream, porch):
    up = upstream()
    p = porch(site(up.url, 'body_timeout = "1s"\n'))
    mark = p.error_log_mark()
    with RawConn(p.port, timeout=6) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\n"
               + b"x" * 100)
        start = time.monotonic()
        r = c.read_response()
        elapsed = time.monotonic() - start
        assert r.status == 408
        assert 0.9 <= elapsed < 4, f"408 after {elapsed:.1f}s with body_timeout = 1s"
        assert_short_error_body(r.body)
        assert c.closed_by_peer(timeout=3)
    log = p.error_log_text(wait_for="time", since=mark)
    assert "timeout" in log.lower() or "timed out" in log.lower(), log


def test_request_head_over_16k_is_431(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    mark = p.error_log_mark()
    with RawConn(p.port, timeout=5) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n")
        r = c.read_response()
    assert r.status == 431
    assert_short_error_body(r.body)
    assert up.stats()["requests"] == 0
    log = p.error_log_text(wait_for="431|large|header", since=mark)
    assert any(w in log.lower() for w in ("431", "large", "header")), log


def test_head_just_under_limit_passes(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port, timeout=5) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"b" * 12_000 + b"\r\n\r\n")
        assert c.read_response().status == 200


def test_upstream_closing_mid_body_is_not_passed_off_as_whole(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    mark = p.error_log_mark()
    r = curl_fetch(f"{p.url}/close-mid-body", "-H", "Host: app.test", "-m", "10")
    # curl 18 = CURLE_PARTIAL_FILE: the connection closed before the promised length.
    assert r.rc == 18, f"curl exit {r.rc}, {len(r.body)} bytes, stderr {r.stderr!r}"
    assert len(r.body) < 100_000
    log = p.error_log_text(wait_for="clos|premature|incomplete|reset|eof", since=mark)
    assert any(w in log.lower() for w in ("clos", "premature", "incomplete", "reset", "eof")), log

