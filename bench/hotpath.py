"""Porch's per-request Python cost, without sockets: the protocol objects fed bytes.

A ClientConnection and a pooled UpstreamConnection get fake transports; each round
feeds the client a wrk-like request and the upstream nginx's 100-byte response, and
checks the client got the response.  CPU time per round is Porch's Python work per
small request, minus the kernel and the event loop (see bench/RESULTS.md).

    .venv/bin/python bench/hotpath.py [-n 200000] [--profile] [--noop-policies N]
    .venv/bin/python bench/hotpath.py --policies bench

--noop-policies N puts N policies on the route whose hooks do nothing, each hooked
into every phase: the price of the pipeline itself, per policy.

--policies bench puts bench/policies.py's route on the site: basic_auth (a `{SHA}`
htpasswd file written to a temporary directory; the requests carry its
Authorization, so after the first the check is a cache hit), security_headers,
rate_limit (100000r/s burst 100000 nodelay: never rejects) and compress (gzip level
1); the requests are wrk's with `Authorization` and `Accept-Encoding: gzip`, the
upstream answers what the benchmark's origin nginx does for its JSON file (922
bytes, Content-Length, ETag, Last-Modified, Accept-Ranges).  The response is checked
once: 200, gzip, the three security headers, a body that decodes to the file.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import os
import pstats
import sys
import tempfile
import time
import zlib
from pathlib import Path

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

# --policies bench: bench/policies.py's route, its request and its origin's answer
BENCH_USER, BENCH_PASSWORD = "bench", "porch bench password"
BENCH_POLICIES = """
basic_auth = {{ htpasswd = "{htpasswd}", realm = "bench" }}
security_headers = true
rate_limit = {{ rate = "100000r/s", burst = 100000, nodelay = true }}
compress = {{ algorithms = ["gzip"], level = 1, min_length = 256 }}
"""
SECURITY = (b"X-Content-Type-Options: nosniff", b"X-Frame-Options: SAMEORIGIN",
            b"Referrer-Policy: strict-origin-when-cross-origin")


def bench_json() -> bytes:
    """bench/policies.py's file: bench/compress.py's JSON records, 922 bytes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import compress

    return compress.json_body(1000)


def bench_exchange(tmp: str) -> tuple[str, bytes, bytes, bytes]:
    """(config, request, upstream response, JSON body) for --policies bench."""
    htpasswd = os.path.join(tmp, "htpasswd")
    digest = base64.b64encode(hashlib.sha1(BENCH_PASSWORD.encode()).digest()).decode()
    with open(htpasswd, "w") as f:  # what `htpasswd -s` writes
        f.write(f"{BENCH_USER}:{{SHA}}{digest}\n")
    config = CONFIG + BENCH_POLICIES.format(htpasswd=htpasswd)
    token = base64.b64encode(f"{BENCH_USER}:{BENCH_PASSWORD}".encode())
    request = (b"GET /data.json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Basic " + token
               + b"\r\nAccept-Encoding: gzip\r\n\r\n")
    body = bench_json()
    response = (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 16:00:00 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        b"Last-Modified: Mon, 23 Nov 2026 15:00:00 GMT\r\nConnection: keep-alive\r\n"
        b'ETag: "6563a8f0-39a"\r\nAccept-Ranges: bytes\r\n\r\n' % len(body)) + body
    return config, request, response, body


def check_bench_response(data: bytes, body: bytes) -> None:
    """The client's bytes of one --policies bench round: 200, gzip, the security
    headers, a chunked body that decodes to the file."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK", lines[0]
    for line in (b"Content-Encoding: gzip", b"Transfer-Encoding: chunked", b"Vary: Accept-Encoding",
                 *SECURITY):
        assert line in lines, f"no {line!r} in {lines}"
    coded = b""
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if not n:
            break
        coded += rest[:n]
        rest = rest[n + 2:]
    assert zlib.decompress(coded, 16 + zlib.MAX_WBITS) == body, "the body does not decode to the file"


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


class Keeping(FakeTransport):
    """A FakeTransport that also keeps what is written: the client's transport for the
    one checked round only, so the measured rounds pay nothing for it."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]) -> None:
        super().__init__(peer, local)
        self.kept: list[bytes] = []

    def write(self, data) -> None:
        FakeTransport.write(self, data)
        self.kept.append(bytes(data))

    def writelines(self, chunks) -> None:
        chunks = list(chunks)
        FakeTransport.writelines(self, chunks)
        self.kept.extend(bytes(c) for c in chunks)


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


def setup(access_log: str, policies: int = 0, config_text: str = CONFIG):
    loop = uvloop.new_event_loop()
    config = loads(config_text)
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


def _rounds(n: int, client, ct, up, runtime, request: bytes = REQUEST, response: bytes = RESPONSE) -> None:
    feed_client = client.data_received
    feed_up = up.data_received
    log = runtime.access_log
    for i in range(n):
        feed_client(request)
        feed_up(response)
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
    ap.add_argument("--policies", choices=("bench",), help="bench: bench/policies.py's route (see above)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="porch-hotpath-") as tmp:
        if args.policies:
            config_text, request, response, body = bench_exchange(tmp)
        else:
            config_text, request, response, body = CONFIG, REQUEST, RESPONSE, b""
        return run(args, config_text, request, response, body, collect)


def run(args, config_text: str, request: bytes, response: bytes, body: bytes, collect: dict | None) -> int:
    loop, runtime, client, ct, up, ut = setup(args.access_log, args.noop_policies, config_text)

    def rounds(n: int, client, ct, up, runtime) -> None:
        _rounds(n, client, ct, up, runtime, request, response)

    rounds(2000, client, ct, up, runtime)  # warm the memos
    kept = Keeping(ct.extra["peername"], ct.extra["sockname"])
    client.transport = kept  # for this one round: the measured ones pay nothing for it
    rounds(1, client, kept, up, runtime)
    client.transport = ct
    per = kept.written
    if body:
        check_bench_response(b"".join(kept.kept), body)
    else:
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
