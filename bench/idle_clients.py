#!/usr/bin/env python3
"""Open N keep-alive connections to a server and hold them idle.

Each connection sends one complete GET request, reads the whole response
(Content-Length framed) and then stays open without sending anything.

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


async def open_one(loop, host, port, request, stats, sem, protos, timeout):
    async with sem:
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: HoldProtocol(request, stats), host, port),
                timeout,
            )
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
    stats = {"failed": 0, "unexpected_data": 0}
    protos: list[HoldProtocol] = []
    sem = asyncio.Semaphore(args.concurrency)
    await asyncio.gather(*(
        open_one(loop, args.host, args.port, request, stats, sem, protos, args.timeout)
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
