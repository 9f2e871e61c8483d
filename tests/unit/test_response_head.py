"""http/response_head.py splits a head exactly as httptools' per-header callbacks did.

Each head below is one that llhttp accepts (strict mode); the reference is what
httptools reports through on_status / on_header for the same bytes.
"""

from __future__ import annotations

import time

import httptools
import pytest

from porch.http import h1
from porch.http.conditional import parse_http_date
from porch.http.response_head import _parse_split, parse_response_head

HEADS = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 16:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",  # no reason
    b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",  # empty reason
    b"HTTP/1.1 200  Very OK \r\nContent-Length: 0\r\n\r\n",  # reason keeps its spaces
    b"HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:9/x\r\n\r\n",
    b"\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # CR/LF before the status line
    b"HTTP/1.1 200 OK\r\nA:  x  \r\nB:\tv\t\r\nC:\r\nD: \r\nE:b:c\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 O\x01K\r\nX-Obs: caf\xe9\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nKeep-Alive: timeout=5\r\n"
    b"Connection: Keep-Alive, X-Hop\r\nX-Hop: 1\r\nX-Accel-Buffering: no\r\nTE: trailers\r\n"
    b"PROXY-CONNECTION: close\r\nUpgrade: h2c\r\nx-accel-redirect: /a\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * i) for i in range(70))
    + b"X-" + b"n" * 80 + b": long name\r\nContent-Length: 0\r\n\r\n",
]


NOW = b"<now>"


def dated_now(lines: list) -> list:
    """`lines` with an added Date's value, checked to be now, replaced by NOW."""
    if lines[-4:-2] == [b"Date", h1.SEP]:
        assert abs(parse_http_date(lines[-2]) - time.time()) <= 2, lines[-2]
        lines = lines[:-2] + [NOW, h1.CRLF]
    return lines


def reference(head: bytes):
    """(status, reason, lines, special) as httptools' callbacks give them."""
    kinds = h1.RESPONSE_HEADERS

    class Proto:
        reason = b""
        lines: list = []
        special = None
        done = False

        def on_status(self, s):
            self.reason += s

        def on_header(self, name, value):
            kind = kinds.kind(name)
            if not kind:
                self.lines += (name, h1.SEP, value, h1.CRLF)
            else:
                self.special = (self.special or []) + [(kind, name, value)]

        def on_headers_complete(self):
            self.done = True
            # a final response without Date gets one (RFC 9110 6.6.1), as nginx adds it
            if parser.get_status_code() >= 200 and not any(
                    n.lower() == b"date" for n in self.lines[0::4] + [k[1] for k in self.special or ()]):
                self.lines += (b"Date", h1.SEP, NOW, h1.CRLF)

    proto = Proto()
    proto.lines = []
    parser = httptools.HttpResponseParser(proto)
    parser.feed_data(head)
    assert proto.done
    return parser.get_status_code(), proto.reason, proto.lines, proto.special


@pytest.mark.parametrize("head", HEADS, ids=range(len(HEADS)))
@pytest.mark.parametrize("parse", [parse_response_head, _parse_split], ids=["compiled-or-loop", "split"])
def test_same_as_httptools_callbacks(parse, head):
    status, reason, lines, special = reference(head)
    for start, data in ((0, head), (5, b"junk!" + head), (0, head + b"body bytes")):
        got = parse(data, start)
        assert got is not None
        end, got_status, got_reason, got_lines, got_special = got
        assert end == start + len(head)
        assert [got_status, got_reason, dated_now(got_lines), got_special] == [status, reason, lines, special]


@pytest.mark.parametrize("parse", [parse_response_head, _parse_split], ids=["compiled-or-loop", "split"])
def test_incomplete_head_is_none(parse):
    head = HEADS[0]
    for cut in (0, 10, 17, 40, len(head) - 2, len(head) - 1):
        assert parse(head[:cut], 0) is None, cut


def test_every_name_with_a_kind_passes_the_gate():
    # The gate may let through names without a kind (they are looked up), never stop one.
    for name in h1.RESPONSE_HEADERS.table:
        for variant in (name, name.upper(), name.title()):
            head = b"HTTP/1.1 200 OK\r\n" + variant + b": v\r\n\r\n"
            _, _, _, lines, special = parse_response_head(head, 0)
            assert dated_now(lines) in ([], [b"Date", h1.SEP, NOW, h1.CRLF]) and special == [(h1.RESPONSE_HEADERS.kind(name), variant, b"v")]


def test_a_status_line_not_of_http_is_refused():
    # llhttp accepts RTSP/1.0 (and any protocol name) in a status line; a head that does
    # not begin with HTTP/ is not what Porch can relay (nginx: "upstream sent no valid
    # HTTP/1.0 header"), nor where a head was expected (issue 11: a head's tail).
    for parse in (parse_response_head, _parse_split):
        assert parse(b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0) is None
        assert parse(b"Content-Length: 8\r\n\r\npoisoned", 0) is None
        assert parse(b"\r\nHTTP/1.1 200 OK\r\n\r\n", 0) is not None


@pytest.mark.parametrize("parse", [parse_response_head, _parse_split], ids=["compiled-or-loop", "split"])
def test_a_date_is_added_once_to_a_final_response_without_one(parse):
    # RFC 9110 6.6.1: a recipient with a clock adds Date to a response it forwards
    # without one; nginx does it too. One already there, in any case, is kept alone.
    def dates(head):
        lines = parse(head, 0)[3]
        return [lines[i + 2] for i in range(0, len(lines), 4) if lines[i].lower() == b"date"]

    added = dates(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert len(added) == 1 and abs(parse_http_date(added[0]) - time.time()) <= 2
    assert len(dates(b"HTTP/1.1 404 Not Found\r\n\r\n")) == 1
    for spelling in (b"Date", b"date", b"DATE", b"dAtE"):
        head = b"HTTP/1.1 200 OK\r\n" + spelling + b": Mon, 23 Nov 2026 16:00:00 GMT\r\n\r\n"
        assert dates(head) == [b"Mon, 23 Nov 2026 16:00:00 GMT"], spelling
    # a name that merely starts like it is not a Date
    assert len(dates(b"HTTP/1.1 200 OK\r\nDates: x\r\nDat: y\r\n\r\n")) == 1
    # interim responses are not dated: the final one is
    assert dates(b"HTTP/1.1 100 Continue\r\n\r\n") == []
    assert dates(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n") == []
