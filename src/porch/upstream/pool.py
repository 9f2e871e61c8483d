"""Upstream targets, their keep-alive pools, and round-robin choice.

Decisions are synchronous (httpcore's habit): `Balancer.order()` says which
targets to try, `Target.take_idle()` hands out a pooled connection or None; the
async caller (server/proxy.py) does the connecting.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from porch.config.model import UpstreamTarget
    from porch.observability.errorlog import ErrorLog

# Idle connections kept per target per worker.  nginx's `keepalive 32` in most
# guides; we keep a little more since we have no separate upstream block.
MAX_IDLE = 64
# An idle pooled connection older than this is closed by us first, so that we do not
# race an upstream closing it (uvicorn 5s, gunicorn 2s, node 5s keep-alive defaults:
# we stay under the shortest common one).
IDLE_TTL = 2.0
# After a refused connection, a target is skipped for this long while others are up
# (nginx max_fails=1 fail_timeout=10s).
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

    __slots__ = ("spec", "host", "port", "label", "ssl", "server_hostname", "idle", "down_until",
                 "error_log")

    def __init__(self, spec: UpstreamTarget, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, error_log: ErrorLog | None = None) -> None:
        """`tls` (built at load, see upstream/tls.py) for an https:// target, with the
        name sent as SNI and checked in the certificate (the URL's host by default).
        `error_log`: where its connections say why they closed between exchanges."""
        self.spec = spec
        self.host = spec.host
        self.port = spec.port
        self.label = spec.url
        # Passed as they are to create_connection: None and None for plain http.
        self.ssl = tls
        self.server_hostname = (server_hostname or spec.host) if tls is not None else None
        self.idle: list[Pooled] = []  # oldest first (at most MAX_IDLE: pop(0) is cheap)
        self.down_until = 0.0
        self.error_log = error_log

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
    """Round robin over a route's targets, skipping recently refused ones."""

    __slots__ = ("targets", "single", "_next")

    def __init__(self, targets: tuple[Target, ...]) -> None:
        self.targets = targets
        self.single = len(targets) == 1  # nothing to choose
        self._next = 0

    def order(self, now: float) -> tuple[Target, ...] | list[Target]:
        """Targets to try, in order: the next in turn first, failed ones last."""
        targets = self.targets
        n = len(targets)
        if n == 1:
            return targets
        start = self._next
        self._next = (start + 1) % n
        ring = [targets[(start + i) % n] for i in range(n)]
        up = [t for t in ring if t.down_until <= now]
        return up + [t for t in ring if t.down_until > now]

    def mark_failed(self, target: Target, now: float) -> None:
        if len(self.targets) > 1:
            target.down_until = now + FAIL_TIMEOUT
