"""Per-worker request counters: what `/metrics` and the dashboard add up.

Each route (and the runtime, for requests no route took) has a `RouteStats`,
updated once per request at the end of the exchange, beside its access-log line
(Exchange.account).  Compiled (stats.pxd), the counters are C arrays: a request
costs a few additions and a walk over the histogram bounds, no allocation and no
lock.  The supervisor asks each worker for a snapshot over its control channel
(server/worker.py "metrics") when it is scraped, and adds them up
(server/admin/metrics.py).

Why not prometheus-client's multiprocess mode: every inc() there writes to an
mmapped file through a Python lock; ~15 updates a request (counters, two
histograms of 14 buckets) cost more than Porch's whole request path
(bench/RESULTS.md, "Metrics").  A scrape here costs the worker one snapshot, built
from numbers it already has.
"""

from __future__ import annotations

from typing import Any

# Latency bucket bounds, seconds (Prometheus' default buckets, with 30 s and 60 s
# for slow uploads and long polls); a last, implicit bucket is +Inf.
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
NB = 17  # len(BOUNDS) + 1: C array sizes in stats.pxd
PROTOCOLS = ("HTTP/1.0", "HTTP/1.1", "HTTP/2")
CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")  # status // 100, 499 and 444 in 4xx
NC = 18  # len(PROTOCOLS) * len(CLASSES)

_COMPILED = not __file__.endswith(".py")


class RouteStats:
    """The counters of one route (`site`, `route` as labels).  Typed in stats.pxd."""

    def __init__(self, site: str, route: str) -> None:
        self.site = site
        self.route = route
        if not _COMPILED:  # compiled: C arrays, zeroed with the object (sizes: NC, NB)
            self.requests = [0] * 18  # [protocol * 6 + status class]
            self.total = [0] * 17  # request time histogram (counts per bucket, not cumulative)
            self.upstream = [0] * 17  # upstream time: request written to response over
            self.bounds = [0.0] * 16
        for i in range(NB - 1):
            self.bounds[i] = BOUNDS[i]
        self.total_sum = 0.0
        self.upstream_sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0

    def record(self, status: int, version: bytes, bytes_in: int, bytes_out: int, took: float,
               upstream: float) -> None:
        """Count one exchange (server/proxy.py Exchange.account): its status, HTTP
        version (b"1.1", b"2.0" ...), body bytes, seconds in all and upstream (< 0:
        it never reached one).  Plain values, not the Exchange: this module imports
        nothing of the server (a cimport of Exchange here makes an import cycle)."""
        proto = 2 if version == b"2.0" else (1 if version == b"1.1" else 0)
        cls = status // 100 if 100 <= status < 600 else 0
        self.requests[proto * 6 + cls] += 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.total_sum += took
        self.total[self._bucket(took)] += 1
        if upstream >= 0.0:
            self.upstream_sum += upstream
            self.upstream[self._bucket(upstream)] += 1

    def _bucket(self, seconds: float) -> int:
        """The index of the first bound >= `seconds` (NB - 1: +Inf)."""
        i = 0
        while i < 16 and seconds > self.bounds[i]:  # 16: NB - 1, a C constant when compiled
            i += 1
        return i

    def snapshot(self) -> dict[str, Any]:
        """Plain numbers, for the control channel (JSON)."""
        return {
            "site": self.site, "route": self.route,
            "requests": [self.requests[i] for i in range(NC)],
            "total": [self.total[i] for i in range(NB)],
            "upstream": [self.upstream[i] for i in range(NB)],
            "total_sum": self.total_sum, "upstream_sum": self.upstream_sum,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
        }


class PolicyCounter:
    """A counter a policy increments (rate-limit rejections and the like): labels
    in the order given at creation."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if len(labels) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {labels}")
        self.values[labels] = self.values.get(labels, 0.0) + amount


class PolicyMetrics:
    """The metrics interface policies get through registry.Env.metrics: named
    counters, per worker, gathered with the request counters at each scrape.  Names
    start with "porch_" and end with "_total" (Prometheus' naming for counters);
    asking twice for a name returns the same counter."""

    def __init__(self) -> None:
        self.counters: dict[str, PolicyCounter] = {}
        # Present from the start, so a dashboard or alert finds it before the first
        # rejection; the rate-limit policy increments it with its site and route.
        self.rate_limited = self.counter("porch_rate_limit_rejections_total",
                                         "Requests refused by a rate or connection limit", ("site", "route"))

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> PolicyCounter:
        if not name.startswith("porch_") or not name.endswith("_total"):
            raise ValueError(f"metric {name!r}: names start with porch_ and end with _total")
        found = self.counters.get(name)
        if found is None:
            found = self.counters[name] = PolicyCounter(name, documentation, tuple(labels))
        elif found.labels != tuple(labels):
            raise ValueError(f"metric {name!r} exists with labels {found.labels}")
        return found

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "doc": c.documentation, "labels": list(c.labels),
                 "values": [[list(k), v] for k, v in c.values.items()]} for c in self.counters.values()]
