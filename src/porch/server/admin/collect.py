"""The workers' numbers added up, and written out for Prometheus.

The supervisor keeps each worker's latest snapshot (server/snapshot.py) and, when a
worker exits, adds its counters to `Totals.retired`: counters never go down across
reloads and restarts, as Prometheus expects of a `_total` (a worker killed between
two scrapes loses what it counted since the last one).  Gauges (connections,
in-flight requests) come from the live workers only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from porch.observability.stats import BOUNDS, CLASSES, NB, NC, PROTOCOLS

Snapshot = dict[str, Any]


class Counts:
    """Counters summed over snapshots: by route, by policy counter, by target."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, int] = {}

    def add(self, snap: Snapshot) -> None:
        for r in snap.get("routes", ()):
            key = (r["site"], r["route"])
            have = self.routes.get(key)
            if have is None:
                self.routes[key] = {k: (list(v) if isinstance(v, list) else v) for k, v in r.items()}
                continue
            for field in ("requests", "total", "upstream"):
                have[field] = [a + b for a, b in zip(have[field], r[field])]
            for field in ("total_sum", "upstream_sum", "bytes_in", "bytes_out"):
                have[field] += r[field]
        for p in snap.get("policies", ()):
            have = self.policies.setdefault(p["name"], {"doc": p["doc"], "labels": p["labels"], "values": {}})
            for labels, value in p["values"]:
                have["values"][tuple(labels)] = have["values"].get(tuple(labels), 0.0) + value
        for t in snap.get("targets", ()):
            self.failures[t["address"]] = self.failures.get(t["address"], 0) + t["failures"]

    def merged(self, more: Iterable[Snapshot]) -> Counts:
        out = Counts()
        out.add_counts(self)
        for snap in more:
            out.add(snap)
        return out

    def add_counts(self, other: Counts) -> None:
        self.add({"routes": list(other.routes.values()),
                  "policies": [{"name": n, "doc": p["doc"], "labels": p["labels"],
                                "values": [[list(k), v] for k, v in p["values"].items()]}
                               for n, p in other.policies.items()],
                  "targets": [{"address": a, "failures": f} for a, f in other.failures.items()]})

    def requests(self, cls: str | None = None) -> int:
        """All requests counted, or those of one status class ("5xx")."""
        wanted = [i for i in range(NC) if cls is None or CLASSES[i % 6] == cls]
        return sum(r["requests"][i] for r in self.routes.values() for i in wanted)


def gauges(live: Iterable[Snapshot]) -> dict[str, Any]:
    """connections, streams, tunnels summed; targets by address (in flight summed, out
    in any worker, the latest last error)."""
    out: dict[str, Any] = {"connections": 0, "streams": 0, "tunnels": 0, "targets": {}}
    for snap in live:
        for key in ("connections", "streams", "tunnels"):
            out[key] += snap.get(key, 0)
        for t in snap.get("targets", ()):
            have = out["targets"].setdefault(t["address"], {"url": t["url"], "active": 0, "out_for": 0.0,
                                                            "last_error": ""})
            have["active"] += t["active"]
            have["out_for"] = max(have["out_for"], t["out_for"])
            have["last_error"] = t["last_error"] or have["last_error"]
    return out


def exposition(counts: Counts, live: dict[str, Any], extra: dict[str, Any]) -> bytes:
    """The Prometheus text format (prometheus-client's own writer)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(counts, live, extra))
    return generate_latest(registry)


class _Collector:
    def __init__(self, counts: Counts, live: dict[str, Any], extra: dict[str, Any]) -> None:
        self.counts, self.live, self.extra = counts, live, extra

    def collect(self):
        yield from self._requests()
        yield from self._histograms()
        yield from self._gauges()
        yield from self._upstreams()
        yield from self._policies()
        yield from self._supervisor()

    def _requests(self):
        req = CounterMetricFamily("porch_requests", "Requests by site, route, status class and protocol",
                                  labels=("site", "route", "status_class", "protocol"))
        rx = CounterMetricFamily("porch_received_bytes", "Request body bytes received from clients",
                                 labels=("site", "route"))
        tx = CounterMetricFamily("porch_sent_bytes", "Response body bytes sent to clients", labels=("site", "route"))
        for (site, route), r in sorted(self.counts.routes.items()):
            for i in range(NC):
                if r["requests"][i]:
                    req.add_metric((site, route, CLASSES[i % 6], PROTOCOLS[i // 6]), r["requests"][i])
            rx.add_metric((site, route), r["bytes_in"])
            tx.add_metric((site, route), r["bytes_out"])
        yield from (req, rx, tx)

    def _histograms(self):
        for name, field, doc in (("porch_request_duration_seconds", "total",
                                  "Time from the request's first byte to the end of the exchange"),
                                 ("porch_upstream_duration_seconds", "upstream",
                                  "Time from the request sent upstream to the end of the exchange")):
            family = HistogramMetricFamily(name, doc, labels=("site", "route"))
            for (site, route), r in sorted(self.counts.routes.items()):
                counts, running, buckets = r[field], 0, []
                for i in range(NB):
                    running += counts[i]
                    buckets.append((_le(BOUNDS[i]) if i < NB - 1 else "+Inf", running))
                family.add_metric((site, route), buckets, r[f"{field}_sum"])
            yield family

    def _gauges(self):
        for name, key, doc in (("porch_connections", "connections", "Client connections open"),
                               ("porch_http2_streams", "streams", "HTTP/2 streams open"),
                               ("porch_tunnels", "tunnels", "WebSocket and other upgraded tunnels open")):
            yield GaugeMetricFamily(name, doc, value=self.live[key])
        yield GaugeMetricFamily("porch_workers", "Worker processes serving", value=self.extra["workers"])

    def _upstreams(self):
        up = GaugeMetricFamily("porch_upstream_up", "1 if the target is in rotation (health checks pass,"
                               " not taken out by failures, not drained), else 0", labels=("target",))
        flight = GaugeMetricFamily("porch_upstream_in_flight", "Requests in flight to the target",
                                   labels=("target",))
        fails = CounterMetricFamily("porch_upstream_failures", "Failed connects and resets before a response",
                                    labels=("target",))
        for t in self.extra["upstreams"]:
            up.add_metric((t["address"],), 1 if t["state"] == "up" else 0)
            flight.add_metric((t["address"],), t["in_flight"])
            fails.add_metric((t["address"],), t["failures"])
        yield from (up, flight, fails)
        certs = GaugeMetricFamily("porch_certificate_expiry_seconds", "Seconds until the certificate expires",
                                  labels=("names", "source"))
        for c in self.extra["certificates"]:
            if c["expires_in_seconds"] is not None:
                certs.add_metric((",".join(c["names"]), c["source"]), c["expires_in_seconds"])
        yield certs

    def _policies(self):
        for name, p in sorted(self.counts.policies.items()):
            family = CounterMetricFamily(name, p["doc"], labels=tuple(p["labels"]))
            for labels, value in sorted(p["values"].items()):
                family.add_metric(labels, value)
            yield family

    def _supervisor(self):
        reloads = CounterMetricFamily("porch_reloads", "Config reloads by outcome", labels=("outcome",))
        for outcome, n in sorted(self.extra["reloads"].items()):
            reloads.add_metric((outcome,), n)
        yield reloads


def _le(bound: float) -> str:
    return repr(float(bound))
