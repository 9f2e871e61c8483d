"""HTTP/2's rules around the h2 state machine (porch.http.h2), without a network:
header mapping both ways, and the flood guard's windows."""

from __future__ import annotations

import pytest

from porch.http.h2 import (CONTROL_LIMIT, RESET_LIMIT, FloodGuard, RequestFields, limits_frame,
                           request_line_problem, response_headers)


def test_request_fields_split_pseudo_headers_and_join_cookies():
    fields = RequestFields([
        (b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"app.test"),
        (b":path", b"/a?b=1"), (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"),
    ])
    assert (fields.method, fields.scheme, fields.authority, fields.path, fields.protocol) == (
        b"POST", b"https", b"app.test", b"/a?b=1", b"")
    # RFC 9113 8.2.3: cookie crumbs go to HTTP/1.1 as one header, joined by "; "
    assert fields.headers == [(b"accept", b"*/*"), (b"cookie", b"a=1; b=2")]


def test_extended_connect_protocol():
    fields = RequestFields([(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":path", b"/ws")])
    assert (fields.method, fields.protocol, fields.path) == (b"CONNECT", b"websocket", b"/ws")


def test_response_headers_lowercase_and_drop_connection_specific():
    lines = [b"Content-Type", b": ", b"text/html", b"\r\n",
             b"Keep-Alive", b": ", b"timeout=5", b"\r\n",
             b"Transfer-Encoding", b": ", b"chunked", b"\r\n",
             b"X-App", b": ", b"Yes", b"\r\n"]
    assert response_headers(404, lines) == [
        (b":status", b"404"), (b"content-type", b"text/html"), (b"x-app", b"Yes")]


def test_flood_guard_counts_per_second():
    guard = FloodGuard()
    assert all(guard.reset(10.0 + i / 1000) is None for i in range(RESET_LIMIT))
    assert "rapid reset" in guard.reset(10.5)
    # a new second starts a new count
    assert guard.reset(11.6) is None
    for _ in range(CONTROL_LIMIT):
        assert guard.control_frame(12.0, "PING") is None
    assert "PING flood" in guard.control_frame(12.2, "PING")


def test_flood_guard_allows_steady_resets():
    guard = FloodGuard()
    # a browser cancelling 50 streams a second, for a minute, is fine
    assert all(guard.reset(t / 50) is None for t in range(50 * 60))


def test_limits_frame_announces_what_porch_enforces():
    from hyperframe.frame import Frame

    frame, length = Frame.parse_frame_header(memoryview(limits_frame(100, 16384)[:9]))
    frame.parse_body(memoryview(limits_frame(100, 16384)[9:]))
    assert frame.settings == {3: 100, 6: 16384}  # MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE


def test_response_header_values_lose_trailing_whitespace():
    lines = [b"X-A", b": ", b"one \t", b"\r\n", b"X-B", b": ", b"", b"\r\n"]
    assert response_headers(200, lines)[1:] == [(b"x-a", b"one"), (b"x-b", b"")]


def _line_problem(method: bytes, path: bytes, protocol: bytes = b"") -> str | None:
    raw = [(b":method", method), (b":scheme", b"https"), (b":authority", b"app.test")]
    if path:
        raw.append((b":path", path))
    if protocol:
        raw.append((b":protocol", protocol))
    return request_line_problem(RequestFields(raw))


@pytest.mark.parametrize("method, path", [
    (b"GET", b"/"), (b"GET", b"/a/b?c=d&e=%20f"), (b"PROPFIND", b"/dav/"),
    (b"M-SEARCH", b"/x"), (b"OPTIONS", b"*"), (b"GET", b"/~!$&'()*+,;=:@[]{}|^`\\\"<>#"),
    (b"CONNECT", b""), (b"CONNECT", b"/ws"),
])
def test_request_lines_that_http11_takes_pass(method, path):
    protocol = b"websocket" if method == b"CONNECT" and path else b""
    assert _line_problem(method, path, protocol) is None


@pytest.mark.parametrize("method, path, says", [
    (b"GET /be/x", b"/be/h2methsp", "invalid :method"),  # issue 11: became `GET /be/x /be/h2methsp`
    (b"GET\t", b"/", "invalid :method"),
    (b"G(ET)", b"/", "invalid :method"),
    (b"", b"/", "invalid :method"),
    (b"GET", b"/a b", "invalid :path"),
    (b"GET", b"/a\tb", "invalid :path"),
    (b"GET", b"/a\x7fb", "invalid :path"),
    (b"GET", b"/caf\xc3\xa9", "invalid :path"),  # llhttp refuses it in HTTP/1.1 too
    (b"GET", b"/a\x01", "invalid :path"),
    (b"GET", b"a/b", "invalid :path"),
    (b"GET", b"http://other.test/x", "invalid :path"),
    (b"GET", b"*", ':path "*" is for OPTIONS only'),
])
def test_request_lines_that_cannot_be_written_are_refused(method, path, says):
    problem = _line_problem(method, path)
    assert problem is not None and problem.startswith(says), problem
