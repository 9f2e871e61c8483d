"""A worker's numbers, as the supervisor asks for them (server/worker.py: `metrics SEQ`).

One JSON object: the request counters of every route (observability/stats.py), the
policies' counters, the gauges of the moment (connections, HTTP/2 streams, tunnels),
each pooled target's in-flight requests, failures and state as this worker sees
them, and the error lines since the supervisor's last look (`SEQ`).  Built at scrape
time from numbers the worker keeps anyway: nothing on the request path.
"""

from __future__ import annotations

import os
from typing import Any


def snapshot(server: Any, since: int) -> dict[str, Any]:
    runtime = server.runtime
    now = server.loop.time()
    streams = sum(len(getattr(conn, "streams", ())) for conn in server.connections)
    recent = runtime.error_log.recent
    return {
        "pid": os.getpid(),
        "routes": [runtime.stats.snapshot()] + [route.stats.snapshot() for route in runtime.routes],
        "policies": runtime.metrics.snapshot(),
        "connections": len(server.connections),
        "streams": streams,
        "tunnels": len(server.tunnels),
        "targets": [_target(t, now) for t in runtime.targets],
        "errors": recent.since(since) if recent is not None else [],
    }


def _target(t: Any, now: float) -> dict[str, Any]:
    return {
        "address": t.address, "url": t.label, "active": t.active, "failures": t.failures,
        "last_error": t.last_error, "out_for": max(0.0, t.down_until - now), "probe_up": t.probe_up,
    }
