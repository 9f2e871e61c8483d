#!/usr/bin/env python3
"""Open N keep-alive connections to a server and hold them idle.

Each connection sends one complete GET request, reads the whole response
(Content-Length framed) and then stays open without sending anything.

    --tls   HTTP/1.1 over TLS (ALPN http/1.1, the certificate not verified)
    --h2    HTTP/2 over TLS (ALPN h2): the connection preface and SETTINGS, one GET
            on stream 1 read to its END_STREAM, SETTINGS and PINGs acknowledged;
            then idle, as a browser's connection between page loads

Protocol with the parent (bench/run.py), line based:
  stdout: "READY ok=N failed=F"   once every connection finished its request
  stdin:  "check"  -> stdout "ALIVE open=N lost=L"
          "exit" or EOF -> close everything and exit

Standard library only, so it runs under any Python >= 3.8.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import struct
import sys


class HoldProtocol(asyncio.Protocol):
    def __init__(self, request: bytes, stats: dict) -> None:
        self.request = request
        self.stats = stats
        self.buf = bytearray()
        self.need: int | None = None  # total bytes of the response once known
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.open = False

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        self.open = True
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.stats["unexpected_data"] += 1
            return
        self.buf += data
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            status = head[0].split(" ", 2)
            if len(status) < 2 or status[1] != "200":
                self.done.set_exception(RuntimeError(f"bad status line {head[0]!r}"))
                return
            length = None
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and "close" in value.lower():
                    self.done.set_exception(RuntimeError("server sent Connection: close"))
                    return
            if length is None:
                self.done.set_exception(RuntimeError("no Content-Length in response"))
                return
            self.need = end + 4 + length
        if len(self.buf) >= self.need:
            self.buf = bytearray()  # free it: the connection now just idles
            self.done.set_result(True)

    def connection_lost(self, exc) -> None:
        self.open = False
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed before response: {exc}"))


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes((kind, flags)) + struct.pack("!I", stream) + payload


def h2_request(host: str, path: str) -> bytes:
    """The preface, an empty SETTINGS and GET `path` on stream 1, its HPACK block
    written by hand (RFC 7541 appendix A indexes; literals without indexing)."""

    def literal(index: int, value: str) -> bytes:  # name from the static table
        data = value.encode()
        assert index < 15 and len(data) < 127
        return bytes((index, len(data))) + data

    block = b"\x82\x87" + literal(4, path) + literal(1, host)  # GET, https, :path, :authority
    return H2_PREFACE + h2_frame(SETTINGS, 0, 0) + h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, block)


class H2HoldProtocol(HoldProtocol):
    """One GET on stream 1 over HTTP/2, then idle (frames parsed just enough)."""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            self.frame(kind, flags, stream, payload)

    def frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            self.transport.write(h2_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.transport.write(h2_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY and not self.done.done():
            self.done.set_exception(RuntimeError(f"GOAWAY {payload[4:8].hex()}"))
        elif stream == 1 and kind in (HEADERS, DATA):
            if self.done.done():
                self.stats["unexpected_data"] += 1
            elif kind == HEADERS and self.need is None:
                block = payload[(payload[0] + 1) if flags & 0x8 else 0:]  # PADDED
                block = block[5:] if flags & 0x20 else block  # PRIORITY
                if block[:1] != b"\x88":  # :status 200, static index 8 (what nghttp2 and nginx send)
                    self.done.set_exception(RuntimeError(f"status not 200: {block[:8].hex()}"))
                    return
                self.need = 0
            if flags & END_STREAM and not self.done.done():
                self.done.set_result(True)


def client_tls(alpn: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


async def open_one(loop, host, port, request, stats, sem, protos, timeout, tls=None, h2=False):
    async with sem:
        try:
            make = (lambda: H2HoldProtocol(request, stats)) if h2 else (lambda: HoldProtocol(request, stats))
            transport, proto = await asyncio.wait_for(
                loop.create_connection(make, host, port, ssl=tls, server_hostname="" if tls else None),
                timeout,
            )
            if h2 and transport.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
                transport.close()
                raise RuntimeError("the server did not choose h2 by ALPN")
            await asyncio.wait_for(proto.done, timeout)
        except Exception as exc:  # noqa: BLE001 - report and count every failure
            stats["failed"] += 1
            if stats["failed"] <= 5:
                print(f"connection failed: {exc!r}", file=sys.stderr, flush=True)
            return
        protos.append(proto)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/small")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=256,
                    help="connections being opened at the same time")
    ap.add_argument("--timeout", type=float, default=30.0)
    proto = ap.add_mutually_exclusive_group()
    proto.add_argument("--tls", action="store_true", help="HTTP/1.1 over TLS")
    proto.add_argument("--h2", action="store_true", help="HTTP/2 over TLS")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 1024
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    loop = asyncio.get_running_loop()
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "User-Agent: porch-bench-idle\r\nAccept: */*\r\n\r\n"
    ).encode()
    tls = client_tls("h2" if args.h2 else "http/1.1") if args.tls or args.h2 else None
    if args.h2:
        request = h2_request(f"{args.host}:{args.port}", args.path)
    stats = {"failed": 0, "unexpected_data": 0}
    protos: list[HoldProtocol] = []
    sem = asyncio.Semaphore(args.concurrency)
    await asyncio.gather(*(
        open_one(loop, args.host, args.port, request, stats, sem, protos, args.timeout, tls, args.h2)
        for _ in range(args.conns)
    ))
    print(f"READY ok={len(protos)} failed={stats['failed']}", flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "check":
            alive = sum(1 for p in protos if p.open)
            print(f"ALIVE open={alive} lost={len(protos) - alive} "
                  f"unexpected_data={stats['unexpected_data']}", flush=True)
        elif line in ("exit", ""):
            break
    for p in protos:
        if p.transport is not None:
            p.transport.close()
    await asyncio.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
