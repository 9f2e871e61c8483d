"""Upstream servers for Porch's integration tests: one small HTTP/1.1 server, many behaviours.

Run it as its own process (the tests do, by pid)::

    python upstreams.py --port N [--mode MODE] [--host 127.0.0.1]
                        [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]

It prints ``listening on HOST:PORT`` on stdout once the socket accepts.  Pure asyncio
streams and the standard library: the framing is written here, by hand, so that the
server sees exactly the bytes Porch sends (header case and order kept) and so that it
can misbehave on purpose.

Modes (``--mode``), i.e. what the server does with every connection:

``echo`` (default)
    Serve the paths below; keep-alive per RFC 9112 section 9.3 (HTTP/1.1 persistent
    unless ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``).
``hang``
    Accept, read and discard whatever arrives, never answer (Porch's 504).
``close-after-response``
    Like ``echo``, but close every connection right after its response, without a
    ``Connection: close`` header: a keep-alive connection that dies while idle in
    Porch's pool.
``drop-reused``
    Like ``echo``, but a connection's second and later requests are read and then the
    connection is closed without a byte of answer: the race where an upstream's idle
    timeout crosses a reused connection's request (what Porch's stale-pool retry is for).

``drop``
    Every request is read, then its connection closed without a byte of answer: an
    upstream that dies between accepting and answering (Porch's retry on the next target).

``/__stats`` is answered in every mode and never counted; every other request is.

TLS (``--tls-cert`` and ``--tls-key``): every mode is served over TLS instead, ALPN
``http/1.1``; ``--tls-client-ca`` also requires a client certificate issued by that CA.
The echo then has a ``tls`` object: ``sni`` (the server name the client sent, or null),
``alpn``, ``version`` and ``client_cert`` (the client certificate's common name, or
null); without TLS, ``tls`` is null.

Paths (``echo``, ``close-after-response``, ``drop-reused``):

``/status/NNN``
    Answer with status NNN; body ``NNN\\n`` except for 1xx, 204 and 304 (no body, no
    Content-Length).
``/redirect?to=URL[&status=302]``
    302 (or ``status``) with ``Location: URL`` exactly as given (percent-decoded once).
``/slow?delay=S``
    Sleep S seconds (float), then answer like echo.
``/stream?size=N[&chunk=K][&chunked=1]``
    N bytes (suffixes k/M/G, powers of 1024) of the repeating pattern
    ``bytes(range(256))``, generated on the fly in writes of K bytes (default 256k),
    waiting for the socket to drain after each write (backpressure: a slow reader
    slows the writer down, nothing piles up here).  ``chunked=1`` sends it chunked
    instead of with Content-Length.  Progress is in ``/__stats`` (``stream_bytes_sent``,
    ``streams_open``, ``streams_completed``, ``streams_aborted``).
``/chunked[?size=N][&trailers=1]``
    ``Transfer-Encoding: chunked`` response of N pattern bytes (default 100000) in
    chunks of irregular sizes; ``trailers=1`` declares ``Trailer: X-Body-Sha256`` and
    sends it after the last chunk.
``/close-mid-body``
    Declares ``Content-Length: 100000``, sends 30000 pattern bytes, closes.
``/no-length[?size=N][&v=1.0]``
    Status line ``HTTP/1.1`` (or ``HTTP/1.0`` with ``v=1.0``), no Content-Length, no
    Transfer-Encoding: N pattern bytes (default 100000) delimited by closing.
``/expect/reject``
    417 with ``Connection: close``, without reading the body.
``/upgrade-count``
    ``101 Switching Protocols`` (Upgrade: websocket) without a handshake, then counts
    the raw bytes that arrive until EOF, answers ``got N bytes`` and closes: a tunnel
    peer that needs the half-close passed on.
``/events[?count=N][&interval=S][&type=T][&framing=chunked|close][&accel=no]``
    A live stream: N events (default 10), one every S seconds (default 0.1), each
    ``data: SEQ UNIXTIME\n\n`` written when it happens, so a client can tell how long
    each took to reach it.  Content-Type T (default ``text/event-stream``); chunked
    (default) or delimited by closing; ``accel=no`` adds ``X-Accel-Buffering: no``.
anything else: echo
    ``200 application/json``: ``method``, ``target`` (as received), ``path``,
    ``query``, ``version``, ``headers`` (list of ``[name, value]`` pairs, case and
    order as received), ``body_length``, ``body_sha256``, ``body_framing``
    (``length``/``chunked``/``none``), ``expect_continue_sent``, ``server_port``,
    ``conn_id`` (one number per accepted connection, so reuse can be seen),
    ``conn_request`` (1 for a connection's first request, 2 for its second ...) and
    ``request_id`` (counts all requests).  Extra response headers can be asked for with
    ``h=Name:Value`` query parameters (repeatable).

Every request that carries ``Expect: 100-continue`` and a body gets an interim
``100 Continue`` before the body is read.  HEAD gets the head the GET would get, no body.

``/__stats`` answers JSON: ``requests`` (count), ``connections`` (accepted, stats ones
excluded), ``open_connections``, ``targets`` (the last 200 ``METHOD target`` lines) and
the stream counters above.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
import time
from urllib.parse import parse_qs, unquote, urlsplit

PATTERN = bytes(range(256))
_BIG = PATTERN * (4 * 1024 * 1024 // 256 + 1)  # any slice of up to 4 MiB at any phase
MAX_HEAD = 1024 * 1024

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
    302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect",
    400: "Bad Request", 404: "Not Found", 417: "Expectation Failed",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}


def parse_size(text: str) -> int:
    """"1G" -> 1073741824; suffixes k, M, G are powers of 1024."""
    text = text.strip()
    mult = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1:].lower(), 1)
    return int(text[:-1] if mult > 1 else text) * mult


def pattern_bytes(offset: int, length: int) -> memoryview:
    """`length` (<= 4 MiB) bytes of the endless pattern, starting at `offset`."""
    start = offset % 256
    return memoryview(_BIG)[start:start + length]


def pattern_sha256(size: int) -> str:
    """The sha256 of the first `size` bytes of the pattern (what /stream sends)."""
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        n = min(1024 * 1024, size - pos)
        h.update(pattern_bytes(pos, n))
        pos += n
    return h.hexdigest()


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.open_connections = 0
        self.targets: list[str] = []
        self.stream_bytes_sent = 0
        self.streams_open = 0
        self.streams_completed = 0
        self.streams_aborted = 0

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}


class Request:
    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]]):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        split = urlsplit(target)
        self.path = split.path
        self.query = split.query
        self.params = parse_qs(split.query, keep_blank_values=True)
        self.tls: dict | None = None  # what the TLS connection it came on says

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def tokens(self, name: str) -> set[str]:
        name = name.lower()
        out: set[str] = set()
        for k, v in self.headers:
            if k.lower() == name:
                out.update(t.strip().lower() for t in v.split(",") if t.strip())
        return out

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[0] if values else default

    def wants_keepalive(self) -> bool:
        conn = self.tokens("connection")
        if self.version == "HTTP/1.1":
            return "close" not in conn
        return "keep-alive" in conn


class BadRequest(Exception):
    pass


class Server:
    def __init__(self, mode: str, port: int):
        self.mode = mode
        self.port = port
        self.stats = Stats()
        self._next_conn = 0

    # -- connection loop -------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_conn += 1
        conn_id = self._next_conn
        counted = False
        self.stats.open_connections += 1
        conn_request = 0
        tls = tls_info(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                try:
                    req = parse_head(head)
                except BadRequest as exc:
                    self.stats.requests += 1
                    self.stats.targets.append(f"<unparseable: {exc}>")
                    await send_simple(writer, 400, b"bad request\n", close=True)
                    return
                req.tls = tls
                if req.path == "/__stats":
                    await self.answer_stats(writer, req)
                    if not req.wants_keepalive():
                        return
                    continue
                if not counted:
                    counted = True
                    self.stats.connections += 1
                conn_request += 1
                self.stats.requests += 1
                self.stats.targets = (self.stats.targets + [f"{req.method} {req.target}"])[-200:]
                if self.mode == "hang":
                    await discard_forever(reader)
                    return
                if self.mode == "drop-reused" and conn_request > 1:
                    return
                if self.mode == "drop":
                    return
                keep = await self.dispatch(req, reader, writer, conn_id, conn_request)
                if not keep or self.mode == "close-after-response":
                    return
        except (ConnectionError, BrokenPipeError):
            return
        finally:
            self.stats.open_connections -= 1
            writer.close()

    async def answer_stats(self, writer: asyncio.StreamWriter, req: Request) -> None:
        stats = self.stats.as_dict()
        stats["open_connections"] -= 1  # not this one
        body = json.dumps(stats).encode()
        await send_response(writer, 200, [("Content-Type", "application/json")], body,
                            keepalive=req.wants_keepalive())

    # -- paths -----------------------------------------------------------------------

    async def dispatch(self, req: Request, reader, writer, conn_id: int, conn_request: int) -> bool:
        """Answer one request; return whether the connection may serve another."""
        path = req.path
        head_only = req.method == "HEAD"
        keep = req.wants_keepalive()
        if path == "/expect/reject":
            await send_simple(writer, 417, b"expectation failed\n", close=True)
            return False
        if path.startswith("/status/"):
            await read_body(req, reader, writer)
            status = int(path[len("/status/"):])
            body = b"" if status < 200 or status in (204, 304) else f"{status}\n".encode()
            await send_response(writer, status, [("Content-Type", "text/plain")], body,
                                keepalive=keep, head_only=head_only,
                                no_length=not body and status in (204, 304))
            return keep
        if path == "/redirect":
            await read_body(req, reader, writer)
            status = int(req.param("status", "302"))
            location = req.param("to", "/")
            await send_response(writer, status, [("Location", location), ("Content-Type", "text/plain")],
                                b"redirecting\n", keepalive=keep, head_only=head_only)
            return keep
        if path == "/stream":
            await read_body(req, reader, writer)
            return await self.stream(req, writer, keep, head_only)
        if path == "/chunked":
            await read_body(req, reader, writer)
            await send_chunked(writer, req, keep, head_only)
            return keep
        if path == "/close-mid-body":
            await read_body(req, reader, writer)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            writer.write(pattern_bytes(0, 30000))
            await writer.drain()
            await asyncio.sleep(0.05)
            return False
        if path == "/no-length":
            await read_body(req, reader, writer)
            size = parse_size(req.param("size", "100000"))
            version = "HTTP/1.0" if req.param("v") == "1.0" else "HTTP/1.1"
            writer.write(f"{version} 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         f"Connection: close\r\n\r\n".encode())
            if not head_only:
                await write_pattern(writer, size, 64 * 1024)
            return False
        if path == "/upgrade-count":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            total = 0
            while data := await reader.read(65536):
                total += len(data)
            writer.write(f"got {total} bytes".encode())
            await writer.drain()
            return False
        if path == "/events":
            await read_body(req, reader, writer)
            return await send_events(writer, req, keep)
        if path == "/slow":
            await asyncio.sleep(float(req.param("delay", "1")))
        return await self.echo(req, reader, writer, conn_id, conn_request, keep, head_only)

    async def echo(self, req, reader, writer, conn_id, conn_request, keep, head_only) -> bool:
        length, sha, framing, continued = await read_body(req, reader, writer)
        doc = {
            "method": req.method, "target": req.target, "path": req.path, "query": req.query,
            "version": req.version, "headers": [[k, v] for k, v in req.headers],
            "body_length": length, "body_sha256": sha, "body_framing": framing,
            "expect_continue_sent": continued, "server_port": self.port,
            "conn_id": conn_id, "conn_request": conn_request, "request_id": self.stats.requests,
            "tls": req.tls,
        }
        extra = []
        for item in req.params.get("h", []):
            name, _, value = item.partition(":")
            extra.append((name.strip(), value.strip()))
        body = (json.dumps(doc, indent=1) + "\n").encode()
        await send_response(writer, 200, [("Content-Type", "application/json"), *extra], body,
                            keepalive=keep, head_only=head_only)
        return keep

    async def stream(self, req: Request, writer, keep: bool, head_only: bool) -> bool:
        size = parse_size(req.param("size", "1M"))
        chunk = min(parse_size(req.param("chunk", "256k")), 4 * 1024 * 1024)
        chunked = req.param("chunked") == "1"
        framing = ("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
        conn = "" if keep else "Connection: close\r\n"
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     f"{framing}\r\n{conn}\r\n".encode())
        if head_only:
            await writer.drain()
            return keep
        self.stats.streams_open += 1
        try:
            pos = 0
            while pos < size:
                n = min(chunk, size - pos)
                data = pattern_bytes(pos, n)
                if chunked:
                    writer.write(b"%x\r\n" % n)
                    writer.write(data)
                    writer.write(b"\r\n")
                else:
                    writer.write(data)
                pos += n
                self.stats.stream_bytes_sent += n
                await writer.drain()
                if writer.transport.is_closing():
                    raise ConnectionResetError("peer went away")
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.stats.streams_completed += 1
        except (ConnectionError, BrokenPipeError):
            self.stats.streams_aborted += 1
            raise
        finally:
            self.stats.streams_open -= 1
        return keep


# -- framing -------------------------------------------------------------------------


def parse_head(head: bytes) -> Request:
    lines = head[:-4].split(b"\r\n")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError:
        raise BadRequest(repr(lines[0][:100])) from None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"header line without colon: {line[:100]!r}")
        headers.append((name, value.strip(" \t")))
    return Request(method, target, version, headers)


async def read_body(req: Request, reader: asyncio.StreamReader, writer) -> tuple[int, str, str, bool]:
    """Read the request body; return (length, sha256 hex, framing, sent 100 Continue)."""
    te = req.tokens("transfer-encoding")
    cl = req.header("content-length")
    framing = "chunked" if "chunked" in te else ("length" if cl is not None else "none")
    continued = False
    if framing != "none" and "100-continue" in req.tokens("expect"):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        continued = True
    h = hashlib.sha256()
    total = 0
    if framing == "length":
        remaining = int(cl)
        while remaining:
            data = await reader.read(min(remaining, 1024 * 1024))
            if not data:
                raise ConnectionResetError("body cut short")
            h.update(data)
            total += len(data)
            remaining -= len(data)
    elif framing == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            remaining = size
            while remaining:
                data = await reader.read(min(remaining, 1024 * 1024))
                if not data:
                    raise ConnectionResetError("body cut short")
                h.update(data)
                total += len(data)
                remaining -= len(data)
            await reader.readexactly(2)
    return total, h.hexdigest(), framing, continued


def response_head(status: int, headers, *, length: int | None, keepalive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if not keepalive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_response(writer, status: int, headers, body: bytes, *, keepalive: bool,
                        head_only: bool = False, no_length: bool = False) -> None:
    writer.write(response_head(status, headers, length=None if no_length else len(body),
                               keepalive=keepalive))
    if not head_only:
        writer.write(body)
    await writer.drain()


async def send_simple(writer, status: int, body: bytes, *, close: bool) -> None:
    await send_response(writer, status, [("Content-Type", "text/plain")], body, keepalive=not close)


async def send_chunked(writer, req: Request, keep: bool, head_only: bool) -> None:
    size = parse_size(req.param("size", "100000"))
    trailers = req.param("trailers") == "1"
    headers = [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]
    if trailers:
        headers.append(("Trailer", "X-Body-Sha256"))
    writer.write(response_head(200, headers, length=None, keepalive=keep))
    if head_only:
        await writer.drain()
        return
    pos, step = 0, 0
    sizes = (1, 10, 4096, 777, 65536, 3)
    while pos < size:
        n = min(sizes[step % len(sizes)], size - pos)
        step += 1
        writer.write(b"%x\r\n" % n + bytes(pattern_bytes(pos, n)) + b"\r\n")
        pos += n
        if step % 16 == 0:
            await writer.drain()
    if trailers:
        writer.write(f"0\r\nX-Body-Sha256: {pattern_sha256(size)}\r\n\r\n".encode())
    else:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


async def send_events(writer, req: Request, keep: bool) -> bool:
    count = int(req.param("count", "10"))
    interval = float(req.param("interval", "0.1"))
    chunked = req.param("framing", "chunked") == "chunked"
    headers = [("Content-Type", req.param("type", "text/event-stream")), ("Cache-Control", "no-cache")]
    if req.param("accel") == "no":
        headers.append(("X-Accel-Buffering", "no"))
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    writer.write(response_head(200, headers, length=None, keepalive=keep and chunked))
    await writer.drain()
    for seq in range(count):
        await asyncio.sleep(interval)
        event = f"data: {seq} {time.time():.6f}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(event), event) if chunked else event)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return keep and chunked


async def write_pattern(writer, size: int, chunk: int) -> None:
    pos = 0
    while pos < size:
        n = min(chunk, size - pos)
        writer.write(pattern_bytes(pos, n))
        pos += n
        await writer.drain()


async def discard_forever(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


# -- TLS -----------------------------------------------------------------------------


def tls_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """A server context; the SNI each handshake brings is noted on its SSL object."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED

    def note_sni(ssl_object, server_name, _ctx):
        ssl_object.sni_received = server_name

    ctx.sni_callback = note_sni
    return ctx


def tls_info(writer: asyncio.StreamWriter) -> dict | None:
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    peer = ssl_object.getpeercert() or {}
    names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
    return {"sni": getattr(ssl_object, "sni_received", None),
            "alpn": ssl_object.selected_alpn_protocol(), "version": ssl_object.version(),
            "client_cert": names[0] if names else None}


# -- main ----------------------------------------------------------------------------


async def serve(host: str, port: int, mode: str, tls: ssl.SSLContext | None = None) -> None:
    server = Server(mode, port)
    srv = await asyncio.start_server(server.handle, host, port, limit=MAX_HEAD, backlog=512,
                                     ssl=tls)
    print(f"listening on {host}:{port}", flush=True)
    async with srv:
        await srv.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="echo",
                        choices=["echo", "hang", "close-after-response", "drop-reused", "drop"])
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates from this CA")
    args = parser.parse_args(argv)
    tls = tls_context(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    try:
        asyncio.run(serve(args.host, args.port, args.mode, tls))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
