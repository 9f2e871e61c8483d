"""HTTP/2 attacks against Porch's HTTPS listener, made with the `h2` library as a raw client.

Each test plays one known attack (rapid reset, PING and SETTINGS floods, HPACK bomb,
one huge header, CONTINUATION flood, zero window, too many streams) or the GOAWAY
a graceful shutdown owes its clients, and checks what a user or an operator would
notice: the frames that come back (GOAWAY and its error code, RST_STREAM), what the
upstream saw, Porch's memory, the error log, and that Porch keeps serving everyone
else.  The contract is in src/porch/http/h2.py (limits) and the README.

Real processes: Porch with a site on the local CA (`tls = "internal"`), the
upstreams.py echo/stream server, and h2client.H2Client over TLS with ALPN h2.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame

from .h2client import H2Client, StreamResult
from .helpers import RSSSampler, wait_until
from .test_h2 import h2porch, tls_site  # noqa: F401  (h2porch: a fixture)

MAX_STREAMS = 100  # the default max_concurrent_streams, advertised in SETTINGS
CALM = ErrorCodes.ENHANCE_YOUR_CALM


@pytest.fixture
def h2site(h2porch, upstream):
    """Factory: an upstream (echo mode) and Porch serving it on https://app.test:PORT
    with a local-CA certificate; Porch gets `porch_keys` in its [porch] table."""

    def start(**porch_keys):
        up = upstream()
        return h2porch(tls_site(up.url), **porch_keys), up

    return start


def connect(p, **kw) -> H2Client:
    """A client whose SETTINGS exchange with Porch is done (its SETTINGS acked by us)."""
    c = H2Client(p.https_port, **kw)
    assert c.alpn == "h2", f"ALPN chose {c.alpn!r}"
    assert c.pump(lambda: c.remote_settings and c.settings_acks >= 1, 5), "no SETTINGS from Porch"
    return c


def status(r: StreamResult) -> int | None:
    """The response's status; None if no HEADERS came."""
    return r.status if r.headers else None


def closed(c: H2Client, timeout: float = 5.0) -> bool:
    """Whether the server closes the connection within `timeout` (reading meanwhile)."""
    return c.pump(lambda: c.closed, timeout)


def assert_serving(p) -> None:
    """A new HTTP/2 connection gets a full answer."""
    with connect(p) as c:
        r = c.get("/still-serving")
        assert status(r) == 200 and b'"/still-serving"' in r.data, (status(r), bytes(r.data[:200]))


def requests_seen(up) -> int:
    return up.stats()["requests"]


# -- rapid reset (CVE-2023-44487) ---------------------------------------------------------


def test_rapid_reset_ends_the_connection_with_enhance_your_calm(h2site):
    p, up = h2site()
    bystander = connect(p)  # an ordinary client on its own connection, before the attack
    assert status(bystander.get("/before")) == 200
    seen_before = requests_seen(up)
    mark = p.error_log_mark()

    c = connect(p)
    # A browser leaving a page cancels its streams: 50 resets pass unremarked.
    for _ in range(50):
        c.conn.reset_stream(c.request("/slow?delay=1", flush=False), ErrorCodes.CANCEL)
    c.flush()
    assert status(c.get("/after-cancels")) == 200 and c.goaway is None
    time.sleep(1.1)  # a new one-second window
    for _ in range(2000):  # HEADERS then RST_STREAM at once, 2000 times, in one write
        sid = c.request("/slow?delay=1", flush=False)
        c.conn.reset_stream(sid, ErrorCodes.CANCEL)
    sent_at = time.monotonic()
    c.flush()  # Porch may close while this is sent: the GOAWAY is read below
    assert closed(c), "Porch did not close the connection"
    assert c.goaway is not None, "connection closed without GOAWAY"
    assert c.goaway.error_code == CALM, c.goaway
    assert c.goaway_at - sent_at < 2.0
    # The attack's streams were not all turned into upstream requests.
    time.sleep(1.2)  # a /slow request that did get through would be counted by now
    attack_requests = requests_seen(up) - seen_before
    assert attack_requests < 200, f"{attack_requests} of 2000 reset streams reached the upstream"
    assert p.error_log_text(wait_for="rapid reset", since=mark) != ""
    assert "rapid reset" in p.error_log_text(since=mark)
    # Everyone else is still served: the connection opened before, and a new one.
    assert status(bystander.get("/after")) == 200
    assert_serving(p)


# -- PING and SETTINGS floods -------------------------------------------------------------


def test_ping_flood_ends_the_connection_but_a_few_pings_are_answered(h2site):
    p, _ = h2site()
    mark = p.error_log_mark()
    c = connect(p)
    for i in range(20):  # a keep-alive client's pings: each answered
        c.conn.ping(b"%08d" % i)
    c.flush()
    assert c.pump(lambda: c.ping_acks == 20), f"{c.ping_acks} of 20 PINGs acked"
    assert c.goaway is None
    time.sleep(1.1)  # a new one-second window
    for i in range(1000):
        c.conn.ping(b"%08d" % i)
    c.flush()  # 17 KB: a thousand PINGs in one write
    assert closed(c), "Porch did not close the connection"
    assert c.goaway is not None and c.goaway.error_code == CALM, c.goaway
    assert re.search("ping flood", p.error_log_text(wait_for="ping flood", since=mark), re.I)
    assert_serving(p)


def test_settings_flood_ends_the_connection(h2site):
    p, _ = h2site()
    mark = p.error_log_mark()
    c = connect(p)
    for _ in range(1000):
        c.conn.update_settings({SettingCodes.ENABLE_PUSH: 0})
    c.flush()  # 15 KB: a thousand SETTINGS frames in one write
    assert closed(c), "Porch did not close the connection"
    assert c.goaway is not None and c.goaway.error_code == CALM, c.goaway
    assert re.search("settings flood", p.error_log_text(wait_for="settings flood", since=mark), re.I)
    assert_serving(p)


# -- header bombs -------------------------------------------------------------------------



def send_request(c: H2Client, path: str, headers) -> tuple[int, int]:
    """Encode and send a request with `headers`; (stream id, bytes on the wire)."""
    sid = c.request(path, headers=headers, flush=False)
    data = c.conn.data_to_send()
    c.send_raw(data)
    return sid, len(data)


def test_hpack_bomb_is_refused_before_anything_goes_upstream(h2site):
    p, up = h2site()
    mark = p.error_log_mark()
    c = connect(p)
    big = "b" * 4000  # one entry that fills the 4 KiB dynamic table (4000 + 6 + 32 bytes)
    r = c.get("/plant", headers=[("x-bomb", big)])
    assert status(r) == 200 and big.encode() in r.data  # legitimate: one 4 KiB header
    seen = requests_seen(up)
    base_rss = p.rss_kib()
    with RSSSampler(p) as rss:
        # The entry again (the new :authority and :path entries evicted it), then 499
        # references to it: one 3.5 KB frame on the wire, 2 MB once decoded.
        sid, wire = send_request(c, "/bomb", [("x-bomb", big)] * 500)
        assert wire < 4096, f"the bomb took {wire} bytes: the client did not index the entry"
        assert closed(c), "Porch did not close the connection"
    assert c.goaway is not None and c.goaway.error_code != ErrorCodes.NO_ERROR, c.goaway
    assert status(c.streams[sid]) is None  # no response to the bomb
    assert requests_seen(up) == seen, "the bomb's request went upstream"
    assert rss.peak_kib - base_rss < 20 * 1024, f"RSS grew {rss.peak_kib - base_rss} KiB"
    assert p.error_log_text(since=mark, wait_for="header") != ""
    assert_serving(p)


def test_one_huge_header_gets_431_and_nothing_goes_upstream(h2site):
    p, up = h2site()
    c = connect(p)
    assert c.remote_settings.get(SettingCodes.MAX_HEADER_LIST_SIZE) == 16 * 1024
    seen = requests_seen(up)
    huge = os.urandom(16 * 1024).hex()  # 32 KiB, twice max_header_size: HEADERS + CONTINUATION
    sid, wire = send_request(c, "/huge", [("x-huge", huge)])
    assert wire > 16384  # more than one frame
    r = c.response(sid, timeout=5)
    assert status(r) == 431 and r.ended, r  # RFC 9113 10.5.1, as for HTTP/1.1 heads
    assert requests_seen(up) == seen, "the huge header went upstream"
    # Only that request was refused: the same connection serves the header at a
    # quarter of the size (HPACK state still in step).
    r = c.get("/fits", headers=[("x-huge", huge[:8 * 1024])])
    assert status(r) == 200 and huge[:8 * 1024].encode() in r.data
    assert c.goaway is None and not c.closed


def test_continuation_flood_is_cut_off(h2site):
    p, up = h2site()
    mark = p.error_log_mark()
    c = connect(p)
    seen = requests_seen(up)
    # A valid, small header block (about 1 KB decoded) cut into 1-byte fragments:
    # one HEADERS and ~500 CONTINUATION frames, only the last with END_HEADERS.  Only
    # the frame count is abnormal; h2 caps it at 64.
    block = Encoder().encode([(":method", "GET"), (":scheme", "https"), (":authority", "app.test"),
                              (":path", "/continued"), *[(f"x-h{i}", "v") for i in range(100)]])
    sid = c.conn.get_next_available_stream_id()
    first = HeadersFrame(sid, data=block[:1], flags=["END_STREAM"])
    frames = [first.serialize()]
    for i in range(1, len(block)):
        frames.append(ContinuationFrame(sid, data=block[i:i + 1],
                                        flags=["END_HEADERS"] if i == len(block) - 1 else []).serialize())
    assert len(frames) > 300
    data = b"".join(frames)
    assert len(data) < 16000  # one TLS record: Porch reads all of it before it closes
    c.send_raw(data)
    assert closed(c), "Porch did not close the connection"
    assert c.goaway is not None and c.goaway.error_code != ErrorCodes.NO_ERROR, c.goaway
    assert sid not in c.streams or status(c.streams[sid]) is None
    assert requests_seen(up) == seen, "the flooded request went upstream"
    assert p.error_log_text(since=mark, wait_for="continuation") != ""
    # Control: the same block in one HEADERS frame is served.
    with connect(p) as ok:
        r = ok.get("/continued", headers=[(f"x-h{i}", "v") for i in range(100)])
        assert status(r) == 200


# -- flow control: a client that never opens its window -----------------------------------


def test_zero_window_client_holds_no_memory_and_its_stream_is_reset_after_send_timeout(h2site):
    p, up = h2site(send_timeout="2s")
    mark = p.error_log_mark()
    c = connect(p, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    base_rss = p.rss_kib()
    with RSSSampler(p) as rss:
        sid = c.request("/stream?size=1G")
        asked = time.monotonic()
        assert c.pump(lambda: status(c.streams[sid]) is not None, timeout=5)
        assert status(c.streams[sid]) == 200  # HEADERS are not flow controlled
        time.sleep(1.0)
        sent_1 = up.stats()["stream_bytes_sent"]
        time.sleep(0.5)
        sent_2 = up.stats()["stream_bytes_sent"]
        r = c.response(sid, timeout=10)
    waited = time.monotonic() - asked
    # The upstream was throttled: what it wrote is socket buffers and Porch's bounded
    # per-stream buffer, and it stopped writing.
    assert sent_2 < 16 * 1024 * 1024, f"upstream wrote {sent_2} bytes for a client reading nothing"
    assert sent_2 == sent_1, f"upstream kept writing ({sent_1} -> {sent_2} bytes)"
    assert len(r.data) == 0  # not a byte beyond the zero window
    assert r.reset == ErrorCodes.CANCEL, (r.reset, r.ended)
    assert 1.8 <= waited <= 6.0, f"reset after {waited:.1f}s, send_timeout is 2s"
    assert rss.peak_kib - base_rss < 20 * 1024, f"RSS grew {rss.peak_kib - base_rss} KiB"
    assert p.error_log_text(since=mark, wait_for="nothing") != ""
    # The upstream request was aborted, not left streaming into a paused socket.
    assert wait_until(lambda: up.stats()["streams_open"] == 0, timeout=5)
    # Only the stream was reset: the connection serves a new stream once its window opens.
    sid2 = c.request("/sibling")
    c.conn.increment_flow_control_window(65535, stream_id=sid2)
    c.flush()
    r2 = c.response(sid2)
    assert status(r2) == 200 and b'"/sibling"' in r2.data and r2.ended
    assert c.goaway is None and not c.closed


def test_client_that_stops_reading_the_socket_is_dropped_after_send_timeout(h2site):
    """Windows wide open, then the client reads nothing: Porch's socket buffer fills,
    it stops reading the upstream and, after send_timeout, drops the connection."""
    p, up = h2site(send_timeout="2s")
    mark = p.error_log_mark()
    c = connect(p, settings={SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    c.conn.increment_flow_control_window(2**31 - 1 - 65535)  # the connection's window too
    base_rss = p.rss_kib()
    with RSSSampler(p) as rss:
        c.request("/stream?size=1G")  # and not one read from now on
        time.sleep(1.5)
        sent_1 = up.stats()["stream_bytes_sent"]
        assert p.error_log_text(since=mark, wait_for="nothing", timeout=4.5) != "", "no send_timeout"
        sent_2 = up.stats()["stream_bytes_sent"]
    assert sent_2 < 64 * 1024 * 1024, f"upstream wrote {sent_2} bytes to a client reading nothing"
    assert sent_2 - sent_1 < 4 * 1024 * 1024, f"upstream kept writing ({sent_1} -> {sent_2})"
    assert rss.peak_kib - base_rss < 20 * 1024, f"RSS grew {rss.peak_kib - base_rss} KiB"
    assert wait_until(lambda: up.stats()["streams_open"] == 0, timeout=5), "upstream still streaming"
    assert closed(c, 10), "connection not closed"
    assert_serving(p)


# -- concurrent streams -------------------------------------------------------------------


def test_max_concurrent_streams_slow_streams_all_complete(h2site):
    p, up = h2site()
    c = connect(p)
    assert c.remote_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS) == MAX_STREAMS
    sids = [c.request("/slow?delay=1", flush=False) for _ in range(MAX_STREAMS)]
    c.flush()
    c.pump(lambda: all(c.streams[s].done for s in sids), timeout=15)
    statuses = [status(c.streams[s]) for s in sids]
    assert statuses == [200] * MAX_STREAMS, statuses
    assert all(c.streams[s].ended for s in sids)
    assert up.stats()["requests"] >= MAX_STREAMS


def test_streams_beyond_the_limit_are_refused_and_porch_keeps_serving(h2site):
    p, up = h2site()
    # An attacker does not wait for SETTINGS: 130 requests right after the preface.
    c = H2Client(p.https_port)
    sids = [c.request("/slow?delay=1", flush=False) for _ in range(MAX_STREAMS + 30)]
    c.flush()
    c.pump(lambda: c.closed or all(c.streams[s].done for s in sids), timeout=15)
    served = [s for s in sids if status(c.streams[s]) == 200 and c.streams[s].ended]
    refused = [s for s in sids if c.streams[s].reset == ErrorCodes.REFUSED_STREAM]
    assert len(served) == MAX_STREAMS, (len(served), len(refused), c.goaway)
    assert len(refused) == 30
    assert served == sids[:MAX_STREAMS]  # the first ones, in order
    assert c.goaway is None
    assert_serving(p)


# -- graceful shutdown --------------------------------------------------------------------


def test_sigterm_sends_goaway_and_streams_in_flight_complete(h2site):
    p, up = h2site()
    c = connect(p)
    slow = [c.request("/slow?delay=1.5") for _ in range(3)]
    live = c.request("/events?count=15&interval=0.1")  # a body still arriving for 1.5 s
    assert c.pump(lambda: status(c.streams[live]) == 200, timeout=5)
    assert wait_until(lambda: up.stats()["requests"] >= 4, timeout=5), (up.stats(), c.streams, p.error_log_text())
    p.signal(signal.SIGTERM)
    termed = time.monotonic()
    assert c.pump(lambda: c.goaway is not None, timeout=3), "no GOAWAY after SIGTERM"
    assert c.goaway_at - termed < 1.0
    assert c.goaway.error_code == ErrorCodes.NO_ERROR, c.goaway
    assert c.goaway.last_stream_id == live  # the highest stream accepted
    assert not all(c.streams[s].done for s in [*slow, live])  # GOAWAY came first
    c.pump(lambda: all(c.streams[s].done for s in [*slow, live]), timeout=10)
    for s in slow:
        r = c.streams[s]
        assert status(r) == 200 and r.ended and b'"/slow"' in r.data, (s, r)
    r = c.streams[live]
    assert r.ended and r.data.count(b"data: ") == 15, r
    assert closed(c), "connection left open after its streams ended"
    assert p.wait(timeout=10) == 0


def test_reload_sends_goaway_streams_complete_and_the_new_workers_serve(h2site):
    p, up = h2site()
    c = connect(p)
    slow = [c.request("/slow?delay=1.5") for _ in range(2)]
    assert wait_until(lambda: up.stats()["requests"] >= 2, timeout=5)
    r = p.reload()
    assert r.returncode == 0, r.stderr
    assert c.pump(lambda: c.goaway is not None, timeout=5), "no GOAWAY after reload"
    assert c.goaway.error_code == ErrorCodes.NO_ERROR and c.goaway.last_stream_id == slow[-1]
    with connect(p) as fresh:  # the new worker, while the old one drains
        assert status(fresh.get("/new")) == 200
    c.pump(lambda: all(c.streams[s].done for s in slow), timeout=10)
    for s in slow:
        assert status(c.streams[s]) == 200 and c.streams[s].ended, (s, c.streams[s])
    assert closed(c), "old connection left open after its streams ended"
