"""A WebSocket upstream for the tunnel tests: the `websockets` library's server.

Run it as its own process (the tests do, by pid)::

    python ws_upstream.py --port N [--tls-cert PEM --tls-key PEM]

It prints ``listening on 127.0.0.1:PORT`` once the socket accepts.  With ``--tls-cert``
and ``--tls-key`` it serves TLS (wss://, and /__stats over https).  Paths:

``/echo``
    Every message back as received (text stays text, binary stays binary).
``/close``
    Waits for one text message ``"CODE reason"``, then closes with that code.
``/flood``
    Sends 1 MiB binary messages as fast as the connection takes them
    (``flood_bytes`` in the stats counts what left).
``/stall``
    Accepts and never reads: the library stops reading once 16 frames are queued.
``/__stats`` (plain HTTP)
    JSON: ``open`` (connections now), ``accepted``, ``close_codes`` (the close code
    each ended connection got from its client, 1006 when it got none),
    ``flood_bytes``, ``last_headers`` (the last handshake's request headers).
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import ssl
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MiB = 1024 * 1024


class Stats:
    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0
        self.close_codes: list[int] = []
        self.flood_bytes = 0
        self.last_headers: list[list[str]] = []


STATS = Stats()


def process_request(connection: ServerConnection, request):
    if request.path == "/__stats":
        return connection.respond(http.HTTPStatus.OK, json.dumps(vars(STATS)) + "\n")
    STATS.last_headers = [[k, v] for k, v in request.headers.raw_items()]
    return None


async def handler(ws: ServerConnection) -> None:
    STATS.open += 1
    STATS.accepted += 1
    try:
        path = ws.request.path.split("?")[0]
        if path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif path == "/close":
            code, _, reason = (await ws.recv()).partition(" ")
            await ws.close(int(code), reason)
        elif path == "/flood":
            block = bytes(range(256)) * (MiB // 256)
            while True:
                await ws.send(block)
                STATS.flood_bytes += len(block)
        elif path == "/stall":
            await ws.wait_closed()
        else:
            await ws.close(4004, "no such path")
    except ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        rcvd = ws.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else 1006
        STATS.close_codes.append(code)
        STATS.open -= 1


async def main_async(port: int, tls: ssl.SSLContext | None = None) -> None:
    async with serve(handler, "127.0.0.1", port, process_request=process_request,
                     max_size=64 * MiB, ping_interval=None, backlog=2048, ssl=tls) as server:
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this key (PEM)")
    args = parser.parse_args()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    asyncio.run(main_async(args.port, tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
