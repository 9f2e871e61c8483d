"""Upstream targets, their keep-alive pools, and the choice among them.

Decisions are synchronous (httpcore's habit): `Balancer.order()` says which
targets to try, `Target.take_idle()` hands out a pooled connection or None; the
async caller (server/proxy.py) does the connecting.
"""

from __future__ import annotations

import random
import ssl
from typing import TYPE_CHECKING, Any

from porch.upstream import balance, health

if TYPE_CHECKING:
    from porch.config.model import UpstreamTarget
    from porch.observability.errorlog import ErrorLog
    from porch.upstream.sticky import Sticky

# Idle connections kept per target per worker.  nginx's `keepalive 32` in most
# guides; we keep a little more since we have no separate upstream block.
MAX_IDLE = 64
# An idle pooled connection older than this is closed by us first, so that we do not
# race an upstream closing it (uvicorn 5s, gunicorn 2s, node 5s keep-alive defaults:
# we stay under the shortest common one).
IDLE_TTL = 2.0
# nginx's fail_timeout default (config/model.py Pool has the route's own).
FAIL_TIMEOUT = 10.0


class Pooled:
    """What a Target pools: upstream/connection.py's UpstreamConnection derives from it.
    Compiled, both are extension types (pool.pxd), so the pool's calls on a pooled
    connection are C calls, not Python method calls (~500 instructions a request)."""

    __slots__ = ("idle_since",)

    def is_usable(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Target:
    """One upstream address and its pool of idle keep-alive connections."""

    __slots__ = ("spec", "host", "port", "label", "address", "ssl", "server_hostname", "idle", "down_until",
                 "error_log", "fails", "fail_start", "probe_up", "active", "failures", "last_error")

    def __init__(self, spec: UpstreamTarget, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, error_log: ErrorLog | None = None) -> None:
        """`tls` (built at load, see upstream/tls.py) for an https:// target, with the
        name sent as SNI and checked in the certificate (the URL's host by default).
        `error_log`: where its connections say why they closed between exchanges."""
        self.spec = spec
        self.host = spec.host
        self.port = spec.port
        self.label = spec.url
        self.address = spec.address  # scheme://host:port: health state is keyed by it
        # Passed as they are to create_connection: None and None for plain http.
        self.ssl = tls
        self.server_hostname = (server_hostname or spec.host) if tls is not None else None
        self.idle: list[Pooled] = []  # oldest first (at most MAX_IDLE: pop(0) is cheap)
        # health, per worker: passive (upstream/health.py), and what the supervisor's
        # probes say (upstream/prober.py, read from state_dir by the sweeper)
        self.down_until = 0.0
        self.error_log = error_log
        self.fails = 0
        self.fail_start = 0.0
        self.probe_up = True
        self.active = 0  # requests in flight on it (least_conn, random_two)
        self.failures = 0  # passive health failures since start (/metrics, /upstreams)
        self.last_error = ""  # the latest one's cause

    def take_idle(self, now: float) -> Pooled | None:
        """The most recently used live connection, or None.  LIFO keeps few warm."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.is_usable() and now - conn.idle_since < IDLE_TTL:
                return conn
            conn.close()
        return None

    def put_idle(self, conn: Pooled, now: float) -> None:
        """Take back a connection whose exchange is over; it may serve the next one."""
        conn.release()
        conn.idle_since = now
        self.idle.append(conn)
        if len(self.idle) > MAX_IDLE:
            self.idle.pop(0).close()

    def forget(self, conn: Pooled) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def expire(self, now: float) -> None:
        """Close idle connections past their time (oldest are on the left)."""
        idle = self.idle
        while idle and now - idle[0].idle_since >= IDLE_TTL:
            idle.pop(0).close()

    def close_all(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Balancer:
    """A route's targets and how it picks among them (upstream/balance.py decides,
    upstream/health.py counts failures).  `single`: one target and no health probes,
    nothing to choose nor to count; the proxy then skips `order()` altogether."""

    __slots__ = ("targets", "single", "tries", "mode", "weights", "seeds", "current",
                 "max_fails", "fail_timeout", "sticky", "rng")

    def __init__(self, targets: tuple[Target, ...], weights: tuple[int, ...] | None = None,
                 mode: str = "round_robin", max_fails: int = 1, fail_timeout: float = FAIL_TIMEOUT,
                 retries: int = 1, probed: bool = False, sticky: Sticky | None = None) -> None:
        self.targets = targets
        # nginx: "if there is only a single server in a group, max_fails, fail_timeout
        # are ignored": it is never taken out.  Unless probes say it is down.
        self.single = len(targets) == 1 and not probed
        self.tries = min(len(targets), retries + 1)  # proxy_next_upstream_tries
        self.mode = mode
        self.weights = weights or (1,) * len(targets)
        self.seeds = tuple(balance.seed(t.address) for t in targets)
        self.current = [0] * len(targets)  # smooth weighted round robin's state
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.sticky = sticky
        self.rng = random.Random()

    def order(self, now: float, exchange: Any) -> list[Target]:
        """Targets to try for `exchange`, the chosen one first; [] when all are down.
        In cookie mode, sets `exchange.cookie_target` to the target its valid cookie names."""
        targets = self.targets
        up = [t.probe_up and t.down_until <= now for t in targets]
        if not any(up):
            return []
        mode = self.mode
        if mode == "round_robin":
            picks = balance.ring_after(balance.smooth_weighted(self.current, self.weights, up), up)
        elif mode == "least_conn" or mode == "random_two":
            active = [t.active for t in targets]
            picks = (balance.least_conn(self.current, active, self.weights, up) if mode == "least_conn"
                     else balance.random_two(active, self.weights, up, self.rng))
        elif mode == "ip_hash":
            picks = balance.rendezvous(exchange.client_ip.encode(), self.seeds, self.weights, up)
        elif mode == "uri_hash":
            picks = balance.rendezvous(exchange.target, self.seeds, self.weights, up)
        else:
            picks = self._by_cookie(exchange, up)
        return [targets[i] for i in picks]

    def _by_cookie(self, exchange: Any, up: list[bool]) -> list[int]:
        named = self.sticky.target_of(exchange.headers)
        if named >= 0 and up[named]:
            exchange.cookie_target = self.targets[named]
            return balance.ring_after(named, up)
        return balance.ring_after(balance.smooth_weighted(self.current, self.weights, up), up)

    def mark_failed(self, target: Target, now: float) -> bool:
        """Count a failure of `target`; True when it takes the target out."""
        if len(self.targets) == 1:  # nginx: a lone server is never taken out by failures
            return False
        return health.record_failure(target, now, self.max_fails, self.fail_timeout)

    def why_down(self, now: float) -> str:
        """For the log line of a request that found every target down."""
        parts = []
        for t in self.targets:
            if not t.probe_up:
                parts.append(f"{t.label}: health checks failing")
            else:
                parts.append(f"{t.label}: failed, out for {t.down_until - now:.1f}s more")
        return "; ".join(parts)
