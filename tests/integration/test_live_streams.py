"""Live responses reach the client as they happen: server-sent events, responses
marked X-Accel-Buffering: no, and bodies delimited by the upstream closing
(HTTP/1.0 style, as Icecast sends them).  Each event carries the time it was sent;
the client notes when it arrived."""

from __future__ import annotations

import re
import statistics
import time

import pytest

from .helpers import RawConn, get, site

EVENT = re.compile(rb"data: (\d+) ([\d.]+)\n\n")


def receive_events(port: int, path: str, count: int) -> tuple[list[float], bytes]:
    """Read a live response from Porch; the lag of each event (arrival - sent), and
    the response head."""
    lags: dict[int, float] = {}
    with RawConn(port, timeout=10) as c:
        c.send(get(path))
        buf = b""
        while len(lags) < count:
            data = c.sock.recv(65536)
            now = time.time()
            assert data, f"closed after {len(lags)} of {count} events"
            buf += data
            for m in EVENT.finditer(buf):
                lags.setdefault(int(m.group(1)), now - float(m.group(2)))
        head = buf.split(b"\r\n\r\n", 1)[0]
    return [lags[i] for i in range(count)], head


@pytest.mark.parametrize("query", [
    "type=text/event-stream",
    "type=application/octet-stream&accel=no",
    "type=text/event-stream&framing=close",  # no length, no chunking: until the close
    "type=audio/mpeg&framing=close&accel=no",
], ids=["sse", "accel-no", "sse-close-delimited", "close-delimited-accel-no"])
def test_events_reach_the_client_one_by_one(upstream, porch, query):
    up = upstream()
    p = porch(site(up.url))
    lags, head = receive_events(p.port, f"/events?count=10&interval=0.1&{query}", 10)
    # Buffered, the first event would wait for the others (0.9 s); streamed, each
    # arrives within a few ms of being sent.
    assert max(lags) < 0.25, f"event lags {[round(x, 3) for x in lags]}"
    assert statistics.median(lags) < 0.05, f"event lags {[round(x, 3) for x in lags]}"
    assert b"x-accel-buffering" not in head.lower(), head  # for Porch, not the client (as nginx)
    assert head.startswith(b"HTTP/1.1 200")


def test_close_delimited_stream_ends_when_the_upstream_closes(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port, timeout=10) as c:
        c.send(get("/events?count=5&interval=0.05&framing=close&type=audio/mpeg"))
        r = c.read_response()
    assert r.status == 200
    assert len(EVENT.findall(r.body)) == 5  # all of it, then the end: chunked to a 1.1 client
    assert (r.header("transfer-encoding") or "").lower() == "chunked"
    # an HTTP/1.0 client gets it delimited by the close, as the upstream sent it
    with RawConn(p.port, timeout=10) as c:
        c.send(get("/events?count=5&interval=0.05&framing=close", version="HTTP/1.0"))
        raw = c.read_until_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert len(EVENT.findall(body)) == 5
