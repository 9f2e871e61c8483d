"""Response heads as an upstream may send them: cut anywhere across reads, after a 1xx
in the same read, followed by bytes nobody asked for, or too big.

Porch splits a response head from its bytes once llhttp has checked it
(http/response_head.py), so it has to know where each head begins; these upstreams
write scripted bytes, in pieces with pauses so that Porch gets them as separate reads.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from porch.http.conditional import parse_http_date

from .h2client import H2Client
from .helpers import RawConn, free_port, get, refused_port, site, wait_for_port, wait_until

BODY = b"0123456789" * 10
RESPONSE = (
    b"HTTP/1.1 200 Fine Thanks\r\nServer: scripted\r\nDate: Mon, 23 Nov 2026 16:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nX-Empty:\r\nX-Spaces:  a b  \r\nContent-Length: 100\r\n"
    b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n" + BODY
)


class Scripted:
    """An upstream that answers each request on a connection with the next script: a list
    of byte pieces written with a pause between them (TCP_NODELAY: one segment each)."""

    def __init__(self, scripts: list[list[bytes]], pause: float = 0.03) -> None:
        self.scripts = scripts
        self.pause = pause
        self.connections = 0
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.listener:
            while True:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                self.connections += 1
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            while self.requests < len(self.scripts):
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf.split(b"\r\n\r\n", 1)[1]  # GETs only: no body
                script = self.scripts[self.requests]
                self.requests += 1
                for piece in script:
                    conn.sendall(piece)
                    time.sleep(self.pause)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted():
    made: list[Scripted] = []

    def make(scripts, pause: float = 0.03) -> Scripted:
        s = Scripted(scripts, pause)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def cuts(data: bytes, *at: int) -> list[bytes]:
    edges = [0, *at, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def fetch_all(port: int, n: int) -> list:
    with RawConn(port) as c:
        out = []
        for i in range(n):
            c.send(get(f"/r{i}"))
            out.append(c.read_response())
        return out


def check_relayed(resp) -> None:
    assert (resp.status, resp.reason, resp.body) == (200, "Fine Thanks", BODY)
    names = [k.lower() for k, _ in resp.headers]
    assert resp.header("Server") == "scripted" and resp.header("X-Spaces") == "a b"
    assert "x-empty" in names and "keep-alive" not in names
    assert resp.header("Content-Length") == "100"


def test_head_cut_anywhere_across_reads(scripted, porch):
    head_len = RESPONSE.index(b"\r\n\r\n") + 4
    scripts = [
        cuts(RESPONSE, 1),  # inside the protocol name
        cuts(RESPONSE, 12, 13, 30),  # inside the status code, before the reason
        cuts(RESPONSE, head_len - 3),  # inside the final CRLF CRLF
        cuts(RESPONSE, head_len - 2),
        cuts(RESPONSE, head_len),  # the head alone, then the body
        [bytes([b]) for b in RESPONSE[:head_len]] + [BODY],  # a byte a read
        cuts(b"\r\n" + RESPONSE, 1, 2),  # CR LF before the status line (llhttp skips it)
        [RESPONSE],
    ]
    up = scripted(scripts, pause=0.01)
    p = porch(site(f"http://127.0.0.1:{up.port}"))
    for resp in fetch_all(p.port, len(scripts)):
        check_relayed(resp)
    assert up.connections == 1  # every head left the connection reusable


def test_interim_responses_then_the_final_one(scripted, porch):
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    both = early + RESPONSE
    scripts = [
        [both],  # 103 and 200 in one read
        cuts(both, len(early) + 20),  # the 200's head cut, its start in the 103's read
        cuts(both, len(early) - 1),  # the 103's last byte with the 200
        [early, early, RESPONSE],  # two 103s
    ]
    up = scripted(scripts)
    p = porch(site(f"http://127.0.0.1:{up.port}"))
    with RawConn(p.port) as c:
        for i in range(len(scripts)):
            c.send(get(f"/r{i}"))
            resp = c.read_response()
            check_relayed(resp)
            assert resp.interim == [103] * (2 if i == 3 else 1)
    assert up.connections == 1


def test_a_response_nobody_asked_for_is_not_relayed_later(scripted, porch):
    # The upstream answers the first request twice in one write: the second head must
    # not become the answer to the next request, which gets a fresh connection.
    other = RESPONSE.replace(b"Fine Thanks", b"Unasked For")
    up = scripted([[RESPONSE + other], [RESPONSE]])
    p = porch(site(f"http://127.0.0.1:{up.port}"))
    first, second = fetch_all(p.port, 2)
    check_relayed(first)
    check_relayed(second)
    assert up.connections == 2


def test_head_over_the_limit_is_502(scripted, porch):
    filler = b"X-Filler: " + b"f" * 1000 + b"\r\n"
    head = b"HTTP/1.1 200 OK\r\n" + filler * 1100  # 1.1 MB of header lines, never ended
    up = scripted([[head[i:i + 65536] for i in range(0, len(head), 65536)]], pause=0.001)
    p = porch(site(f"http://127.0.0.1:{up.port}"))
    with RawConn(p.port, timeout=10) as c:
        c.send(get("/big"))
        assert c.read_response().status == 502
    assert wait_until(lambda: "response head over" in p.error_log_text())


def test_every_final_response_carries_one_date(scripted, porch):
    # RFC 9110 6.6.1: a server with a clock sends Date, and a proxy adds it to a response
    # forwarded without one (nginx does both). Caches and clients age responses by it.
    bare = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    own = b"HTTP/1.1 200 OK\r\ndAtE: Mon, 23 Nov 2026 16:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"
    up = scripted([[bare], [own], [bare], [own]], pause=0)
    https_port = free_port()
    p = porch(site(f"http://127.0.0.1:{up.port}", "redirect_http = false\n")
              + f'[[site]]\nhosts = ["down.test"]\nproxy = "http://127.0.0.1:{refused_port()}"\nredirect_http = false\n',
              https_port=https_port, tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")

    def now(value) -> bool:
        value = value.decode() if isinstance(value, bytes) else value
        return abs(parse_http_date(value.encode()) - time.time()) <= 2

    with RawConn(p.port) as c:
        c.send(get("/bare"))
        r = c.read_response()
        assert len(r.header_all("Date")) == 1 and now(r.header("Date"))
        c.send(get("/own"))
        assert c.read_response().header_all("Date") == ["Mon, 23 Nov 2026 16:00:00 GMT"]
        c.send(get("/", host="nowhere.test"))  # Porch's own 404
        r = c.read_response()
        assert r.status == 404 and len(r.header_all("Date")) == 1 and now(r.header("Date"))
        c.send(get("/", host="down.test"))  # Porch's own 502
        r = c.read_response()
        assert r.status == 502 and len(r.header_all("Date")) == 1 and now(r.header("Date"))
    with H2Client(https_port) as c:  # HTTP/2: the same field, in lower case
        r = c.get("/bare")
        assert len([k for k, _ in r.headers if k.lower() == b"date"]) == 1 and now(r.header(b"date"))
        r = c.get("/own")
        assert [v for k, v in r.headers if k.lower() == b"date"] == [b"Mon, 23 Nov 2026 16:00:00 GMT"]
    with H2Client(https_port, server_name="down.test") as c:  # Porch's own 502
        r = c.get("/")
        assert r.status == 502 and now(r.header(b"date"))
