"""The HTTP version of each request, however its bytes are cut into reads.

Porch reads a request's version from its request line's bytes when it knows where
that line is (h1.request_line_version), and asks llhttp otherwise; HTTP/1.0 and 1.1
get different answers (Connection: keep-alive is confirmed to 1.0 clients only) and
access-log lines.
"""

from __future__ import annotations

import time

from .helpers import RawConn, get, site

KA = "Connection: keep-alive\r\n"


def test_version_of_requests_cut_and_pipelined(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    old = get("/v10", version="HTTP/1.0", extra=KA)
    new = get("/v11")
    cut = len("GET /v10 HTTP/1.")
    sends = [
        ([new + old], ["1.1", "1.0"]),  # pipelined in one read
        ([old + new], ["1.0", "1.1"]),
        ([old[:2], old[2:]], ["1.0"]),  # the read begins inside the method
        ([old[:5], old[5:]], ["1.0"]),  # ... inside the target
        ([old[:cut], old[cut:]], ["1.0"]),  # ... inside the version
        ([old[:cut + 2], old[cut + 2:]], ["1.0"]),  # ... between CR and LF
        ([b"\r\n" + old], ["1.0"]),  # an empty line before the request line
        ([new[:-2], new[-2:]], ["1.1"]),  # the head's last CRLF alone
        ([old], ["1.0"]),
        ([new], ["1.1"]),
    ]
    expected = []
    with RawConn(p.port) as c:
        for pieces, versions in sends:
            for piece in pieces:
                c.send(piece)
                time.sleep(0.02)
            for version in versions:
                resp = c.read_response()
                assert resp.status == 200
                keepalive_confirmed = resp.header("Connection") == "keep-alive"
                assert keepalive_confirmed == (version == "1.0"), (pieces, resp.headers)
            expected += versions
    lines = p.access_log_lines(len(expected))
    assert [ln.split('"')[1].rsplit("/", 1)[1] for ln in lines] == expected
