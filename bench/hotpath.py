"""Porch's per-request Python cost, without sockets: the protocol objects fed bytes.

A ClientConnection and a pooled UpstreamConnection get fake transports; each round
feeds the client a wrk-like request and the upstream nginx's 100-byte response, and
checks the client got the response.  CPU time per round is Porch's Python work per
small request, minus the kernel and the event loop (see bench/RESULTS.md).

    .venv/bin/python bench/hotpath.py [-n 200000] [--profile] [--noop-policies N]

--noop-policies N puts N policies on the route whose hooks do nothing, each hooked
into every phase: the price of the pipeline itself, per policy.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import uvloop

from porch.config.compile import compile_config
from porch.config.toml import loads
from porch.observability.accesslog import AccessLog
from porch.server.client import ClientConnection
from porch.upstream.connection import UpstreamConnection

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # what wrk sends
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 16:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"
    + b"x" * 99 + b"\n"
)
CONFIG = """
[porch]
http_port = 8080
bind = ["127.0.0.1"]
[[site]]
tls = "off"
proxy = "http://127.0.0.1:9"
"""


class FakeTransport:
    """Just enough of an asyncio transport; counts what is written."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]) -> None:
        self.extra = {"peername": peer, "sockname": local}
        self.written = 0
        self.writes = 0

    def get_extra_info(self, name, default=None):
        return self.extra.get(name, default)

    def write(self, data) -> None:
        self.written += len(data)
        self.writes += 1

    def writelines(self, chunks) -> None:
        for c in chunks:
            self.written += len(c)
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        raise AssertionError("the harness connection was closed: a request failed")

    abort = close


class FakeServer:
    def __init__(self, loop, runtime) -> None:
        self.loop = loop
        self.runtime = runtime
        self.scheme = b"http"
        self.connections: set = set()
        self.draining = False
        self.limits = None


def noop_policies(n: int) -> list:
    """n policies that hook every phase and do nothing (names from pipeline.ORDER)."""
    from porch.pipeline import ORDER, Policy

    class Noop(Policy):
        def request(self, ctx):
            return None

        def upstream_request(self, ctx, head):
            return None

        def response(self, ctx, head):
            return None

        def response_body(self, ctx, data, end):
            return data

        def log(self, ctx):
            return None

    return [type(f"Noop{i}", (Noop,), {"name": ORDER[i]})() for i in range(n)]


def setup(access_log: str, policies: int = 0):
    loop = uvloop.new_event_loop()
    config = loads(CONFIG)
    log = AccessLog(access_log, "combined")
    runtime = compile_config(config, access_log=log)
    if policies:
        from porch.pipeline import compile_chain

        _, site = runtime.hosts.find(b"127.0.0.1")
        site.root_only.chain = compile_chain(list(site.root_only.chain.policies) + noop_policies(policies))
    server = FakeServer(loop, runtime)
    client = ClientConnection(server)
    ct = FakeTransport(("127.0.0.1", 50000), ("127.0.0.1", 8080))
    client.connection_made(ct)
    target = runtime.targets[0]
    up = UpstreamConnection(target)
    ut = FakeTransport(("127.0.0.1", 9), ("127.0.0.1", 40000))
    up.connection_made(ut)
    target.put_idle(up, loop.time())
    return loop, runtime, client, ct, up, ut


def rounds(n: int, client, ct, up, runtime) -> None:
    feed_client = client.data_received
    feed_up = up.data_received
    log = runtime.access_log
    for i in range(n):
        feed_client(REQUEST)
        feed_up(RESPONSE)
        if i & 255 == 0:
            log.flush()
    log.flush()


def main(argv: list[str] | None = None, collect: dict | None = None) -> int:
    """With `collect` (bench/all.py), the best µs per request goes in collect["us_per_req"]."""
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--once", action="store_true", help="run n rounds once (for valgrind)")
    ap.add_argument("--access-log", default="/dev/null", help='"off" to skip the log line')
    ap.add_argument("--noop-policies", type=int, default=0, metavar="N")
    args = ap.parse_args(argv)
    loop, runtime, client, ct, up, ut = setup(args.access_log, args.noop_policies)
    rounds(2000, client, ct, up, runtime)  # warm the memos
    before = ct.written
    rounds(1, client, ct, up, runtime)
    per = ct.written - before
    assert per > len(RESPONSE) - 60, f"client got {per} bytes a round"
    import gc
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)  # as server/app.py
    if args.once:
        rounds(args.n, client, ct, up, runtime)
        return 0
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        rounds(args.n, client, ct, up, runtime)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0
    best = []
    for _ in range(5):
        t0 = time.process_time()
        rounds(args.n, client, ct, up, runtime)
        best.append((time.process_time() - t0) / args.n * 1e6)
    best.sort()
    print(f"{best[0]:.2f} us per request (best of 5; median {best[2]:.2f}); "
          f"{ct.writes / max(1, ct.written // per):.1f} client writes a request, "
          f"{ut.writes} upstream writes")
    if collect is not None:
        collect["us_per_req"] = best[0]
        collect["median_us_per_req"] = best[2]
    return 0


if __name__ == "__main__":
    sys.exit(main())
