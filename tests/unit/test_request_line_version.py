"""h1.request_line_version: the version at the end of the first CRLF-ended line."""

from __future__ import annotations

import pytest

from porch.http.h1 import request_line_version


@pytest.mark.parametrize("data, start, version", [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, b"1.1"),
    (b"GET / HTTP/1.0\r\n\r\n", 0, b"1.0"),
    (b"\r\n\r\nGET / HTTP/1.0\r\n\r\n", 0, b"1.0"),  # empty lines first
    (b"xxGET / HTTP/1.0\r\n\r\n", 2, b"1.0"),
    (b"T /a HTTP/1.1\r\n\r\n", 0, b"1.1"),  # a read beginning inside the request line
    (b" HTTP/1.1\r\n\r\n", 0, b"1.1"),
    (b"HTTP/1.1\r\n\r\n", 0, None),  # too short to tell it from "...XHTTP/1.1"
    (b"1.1\r\n\r\n", 0, None),  # a read beginning inside the version
    (b"GET / HTTP/1.2\r\n\r\n", 0, None),
    (b"GET / HTTP/2.0\r\n\r\n", 0, None),
    (b"GET / http/1.1\r\n\r\n", 0, None),
    (b"GET /\r\n\r\n", 0, None),
    (b"GET / HTTP/1.1", 0, None),  # no CRLF yet
    (b"GET / HTTP/1.1\r", 0, None),
    (b"", 0, None),
    (b"\r\n", 0, None),
])
def test_request_line_version(data, start, version):
    assert request_line_version(data, start) == version
