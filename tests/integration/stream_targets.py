"""Raw TCP targets for [[stream]] passthrough tests, run as their own process:

    python stream_targets.py --port P --mode MODE [--tls-cert C --tls-key K]

- echo: what it reads, it writes back;
- banner: writes "SSH-2.0-TestServer\\r\\n" at once (the server speaks first), then echoes;
- named: writes "target PORT\\n" at once (which target a connection reached), then echoes;
- proxy: reads a PROXY header with the `proxy-protocol` package (the reference, not
  Porch's code), writes one JSON line {"source": [ip, port], "dest": [ip, port]}, echoes;
- proxyhttp: reads a PROXY header with the package, then HTTP requests, each answered
  200 with a JSON body {"source", "dest", "request", "conn_request"} (an HTTP upstream
  behind `upstream_proxy_protocol`);
- tls: a TLS server (its own certificate; ALPN xmpp-client and http/1.1) that writes
  one JSON line {"sni": ..., "alpn": ...} after the handshake, then echoes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl

from proxyprotocol.detect import ProxyProtocolDetect
from proxyprotocol.reader import ProxyProtocolReader


async def echo(reader, writer) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    writer.close()


async def handle(mode: str, reader, writer) -> None:
    try:
        if mode == "banner":
            writer.write(b"SSH-2.0-TestServer\r\n")
        elif mode == "named":
            writer.write(f"target {writer.get_extra_info('sockname')[1]}\n".encode())
        elif mode == "proxy":
            result = await ProxyProtocolReader(ProxyProtocolDetect()).read(reader)
            src, dst = result.source, result.dest
            line = {"source": [str(src[0]), src[1]] if src else None,
                    "dest": [str(dst[0]), dst[1]] if dst else None}
            writer.write(json.dumps(line).encode() + b"\n")
        elif mode == "proxyhttp":
            await proxy_http(reader, writer)
            return
        elif mode == "tls":
            obj = writer.get_extra_info("ssl_object")
            writer.write(json.dumps({"sni": getattr(obj, "sni", None),
                                     "alpn": obj.selected_alpn_protocol()}).encode() + b"\n")
        await echo(reader, writer)
    except (ConnectionError, asyncio.IncompleteReadError):
        writer.close()


async def proxy_http(reader, writer) -> None:
    result = await ProxyProtocolReader(ProxyProtocolDetect()).read(reader)
    src, dst = result.source, result.dest
    count = 0
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        count += 1
        body = json.dumps({"source": [str(src[0]), src[1]] if src else None,
                           "dest": [str(dst[0]), dst[1]] if dst else None,
                           "request": head.split(b"\r\n", 1)[0].decode("latin-1"),
                           "conn_request": count}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", default="echo")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    ctx = None
    if args.mode == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        ctx.set_alpn_protocols(["xmpp-client", "http/1.1"])

        def remember(obj, name, _ctx):
            obj.sni = name
        ctx.sni_callback = remember

    async def serve() -> None:
        server = await asyncio.start_server(lambda r, w: handle(args.mode, r, w), "127.0.0.1",
                                            args.port, ssl=ctx)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
