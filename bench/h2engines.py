#!/usr/bin/env python3
"""The HTTP/2 engines alone (server/h2engine.py: libnghttp2 and h2): CPU µs per small
request of the codec's work in Porch, with no sockets, TLS or upstream.

    .venv/bin/python bench/h2engines.py [--requests 20000] [--rounds 5]

A client codec (h2) makes the bytes of `--requests` GETs with browser-like headers,
10 streams a batch as h2load -m 10 sends them; the server engine, in the calls
server/h2conn.py and h2stream.py make, reads each batch, answers every stream with
HEADERS (5 fields), a 100-byte DATA and END_STREAM, then serializes the batch's
output once (h2conn.py `want_flush`).  The client's bytes are made beforehand, so only
the server side is timed (process CPU time); medians of `--rounds`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# this directory holds bench/h2.py, which would shadow the h2 package
sys.path[0] = str(Path(__file__).resolve().parent.parent / "src")

import h2.connection  # noqa: E402
from h2.config import H2Configuration  # noqa: E402

from porch.server.h2engine import available, new_engine  # noqa: E402

BATCH = 10
HEADERS = [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1:8443"),
           (":path", "/small"), ("user-agent", "h2load nghttp2/1.52.0"), ("accept", "*/*"),
           ("accept-encoding", "gzip, deflate")]
RESPONSE = [(b":status", b"200"), (b"server", b"origin"), (b"date", b"Wed, 02 Dec 2026 11:00:00 GMT"),
            (b"content-type", b"text/plain"), (b"content-length", b"100")]
BODY = b"x" * 100


def client_batches(requests: int) -> tuple[bytes, list[bytes]]:
    """The client's preface and SETTINGS, then one bytes per batch of GETs."""
    client = h2.connection.H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.max_outbound_frame_size = 16384
    preface = client.data_to_send()
    batches = []
    for start in range(0, requests, BATCH):
        for _ in range(min(BATCH, requests - start)):
            client.send_headers(client.get_next_available_stream_id(), HEADERS, end_stream=True)
        batches.append(client.data_to_send())
        # the client's view of stream state is not needed: close its streams as answered
        client.streams.clear()
    return preface, batches


def run(engine_name: str, preface: bytes, batches: list[bytes]) -> float:
    engine = new_engine(engine_name)
    engine.start(1000, 16384)
    engine.receive_data(preface)
    engine.data_to_send()
    n = 0
    t0 = time.process_time()
    for data in batches:
        for event in engine.receive_data(data):
            if type(event).__name__ == "RequestReceived":
                sid = event.stream_id
                engine.send_headers(sid, RESPONSE)
                if engine.local_flow_control_window(sid) >= len(BODY):
                    engine.send_data(sid, BODY)
                engine.end_stream(sid)
                n += 1
        engine.data_to_send()
    return (time.process_time() - t0) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    preface, batches = client_batches(args.requests)
    results: dict[str, list[float]] = {name: [] for name in available()}
    for _ in range(args.rounds):
        for name in results:
            results[name].append(run(name, preface, batches))
    for name, us in results.items():
        print(f"{name:8} {statistics.median(us):7.1f} µs/request  (rounds: "
              f"{', '.join(f'{u:.1f}' for u in us)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
