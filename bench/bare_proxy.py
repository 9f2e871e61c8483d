"""The floor for a Python proxy: uvloop + httptools and nothing else.

A reference point for bench/run.py (target "bare"): keep-alive both ways, one pooled
upstream connection per client connection, no routing, no header rules, no logs, no
error handling.  It is not a product; it shows how much of Porch's cost per request
is the event loop and the parser, and how much is Porch.

    python3 bench/bare_proxy.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.client.waiting:
            transport.write(self.client.waiting)
            self.client.waiting = b""

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        out = self.client.out
        if out:  # what this read produced, in one writev (as Porch does)
            self.client.out = []
            self.client.transport.writelines(out)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() != b"connection":
            self.headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self.client.out = [b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code(),
                           *self.headers, b"\r\n"]
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.client.out.append(body)

    def connection_lost(self, exc) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, port: int) -> None:
        self.port = port
        self.parser = httptools.HttpRequestParser(self)
        self.upstream: Upstream | None = None
        self.headers: list[bytes] = []
        self.waiting = b""
        self.out: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.upstream = Upstream(self)
        loop = asyncio.get_running_loop()
        loop.create_task(loop.create_connection(lambda: self.upstream, "127.0.0.1", self.port))

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        head = b"".join([self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n",
                         *self.headers, b"X-Forwarded-For: 127.0.0.1\r\n\r\n"])
        self.headers = []
        if self.upstream.transport is None:
            self.waiting = head
        else:
            self.upstream.transport.write(head)

    def connection_lost(self, exc) -> None:
        if self.upstream.transport is not None:
            self.upstream.transport.close()


async def main(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port), "127.0.0.1", port, backlog=511)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
