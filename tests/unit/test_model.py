"""http/model.py: Headers over the flat wire list, as both protocols use it."""

from porch.http.model import Headers, RequestHead, ResponseHead


def test_wraps_the_list_it_is_given_and_serialises_it_as_is():
    flat = [b"Host", b": ", b"a", b"\r\n", b"X-Thing", b": ", b"1", b"\r\n"]
    h = Headers(flat)
    h.add(b"X-Thing", b"2")
    assert flat[-4:] == [b"X-Thing", b": ", b"2", b"\r\n"]  # no copy: the caller's list changed
    assert h.wire() == b"Host: a\r\nX-Thing: 1\r\nX-Thing: 2\r\n"


def test_lookup_is_case_insensitive_and_keeps_the_case_received():
    h = Headers.of([(b"Content-Type", b"text/html"), (b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2")])
    assert h.get(b"content-type") == b"text/html"
    assert h.get(b"CONTENT-TYPE") == b"text/html"
    assert h.get(b"missing") is None
    assert h.get(b"missing", b"d") == b"d"
    assert h.get_all(b"SET-COOKIE") == [b"a=1", b"b=2"]
    assert b"Set-Cookie" in h and b"nope" not in h
    assert list(h.items())[0] == (b"Content-Type", b"text/html")
    assert len(h) == 3


def test_set_replaces_all_of_a_name_at_the_first_ones_place():
    h = Headers.of([(b"A", b"1"), (b"X-Frame-Options", b"DENY"), (b"B", b"2"), (b"x-frame-options", b"x")])
    h.set(b"X-Frame-Options", b"SAMEORIGIN")
    assert list(h) == [(b"A", b"1"), (b"X-Frame-Options", b"SAMEORIGIN"), (b"B", b"2")]
    h.set(b"New", b"v")
    assert list(h)[-1] == (b"New", b"v")


def test_remove_and_setdefault():
    h = Headers.of([(b"Server", b"x"), (b"A", b"1"), (b"server", b"y")])
    assert h.remove(b"SERVER") == 2
    assert list(h) == [(b"A", b"1")]
    assert h.remove(b"Server") == 0
    assert h.setdefault(b"a", b"9") == b"1"
    assert h.setdefault(b"C", b"3") == b"3"
    assert h.wire() == b"A: 1\r\nC: 3\r\n"
    assert h.remove_all(frozenset({b"a", b"c"})) == 2 and len(h) == 0
    h.add(b"X-Frame-Options", b"DENY")
    h.add_missing(((b"x-frame-options", b"SAMEORIGIN"), (b"Referrer-Policy", b"no-referrer")))
    assert list(h) == [(b"X-Frame-Options", b"DENY"), (b"Referrer-Policy", b"no-referrer")]


def test_heads():
    req = RequestHead(b"GET", b"/a/b?x=1", b"example.org", b"1.1", Headers())
    assert req.path == b"/a/b" and req.query == b"?x=1"
    assert RequestHead(b"GET", b"/", b"h", b"2.0", Headers()).query == b""
    resp = ResponseHead(204)
    assert resp.status == 204 and len(resp.headers) == 0 and resp.reason == b""
    assert Headers.of([(b"a", b"1")]) == Headers([b"a", b": ", b"1", b"\r\n"])


def test_names_of_the_same_length_are_told_apart_and_changes_stay_in_the_given_list():
    """Lookups skip names by length before comparing them: names of equal length
    (Content-Type and X-Request-ID, ETag and Vary and Date) must still be told apart,
    and set/remove change the caller's list in place."""
    flat = []
    h = Headers(flat)
    for name, value in ((b"Date", b"d"), (b"X-Request-ID", b"r"), (b"ETag", b'"e"'), (b"Content-Type", b"t"),
                        (b"Vary", b"Cookie"), (b"content-type", b"u")):
        h.add(name, value)
    assert h.get(b"content-type") == b"t" and h.get(b"x-request-id") == b"r"
    assert h.get(b"vary") == b"Cookie" and h.get(b"etag") == b'"e"' and h.get(b"DATE") == b"d"
    assert h.get_all(b"CONTENT-type") == [b"t", b"u"] and h.get(b"content-typ") is None
    h.set(b"ETag", b'W/"e"')  # one of that name: changed where it is
    assert list(h)[2] == (b"ETag", b'W/"e"') and len(h) == 6
    assert h.remove_all(frozenset((b"content-type", b"vary"))) == 3
    assert flat == [b"Date", b": ", b"d", b"\r\n", b"X-Request-ID", b": ", b"r", b"\r\n",
                    b"ETag", b": ", b'W/"e"', b"\r\n"]
    h.set(b"date", b"x")
    assert h.wire() == b'date: x\r\nX-Request-ID: r\r\nETag: W/"e"\r\n'
