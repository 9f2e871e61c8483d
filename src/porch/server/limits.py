"""`max_connections_per_client` and `max_connections` ([porch]): connections counted
at accept, across every worker of the machine (the shared table, limits/table.py).

    [porch]
    max_connections = 10000          # all clients together
    max_connections_per_client = 50  # one client address (nginx limit_conn $binary_remote_addr 50)

- A connection over a limit is closed as soon as it is accepted: before a byte is
  read or a TLS handshake started (nginx's limit_conn answers 503 once the request
  is read; by then a flood has cost a handshake).  Refusals are logged once per
  client per LOG_EVERY seconds, not per attempt.
- The client is the connection's peer, or the source of its PROXY header from an
  accept_proxy_protocol peer (X-Forwarded-For comes later, with the request).
- HTTP/2: each concurrent stream counts as a connection, as nginx's limit_conn
  counts each HTTP/2 stream.  The connection's own place (taken at accept, as for
  HTTP/1.1) serves its first stream; each stream open beside it takes one more place
  and gives it back when it ends.  A stream over a limit is refused with RST_STREAM
  REFUSED_STREAM (RFC 9113 8.7: never processed, safe to retry) while the
  connection and its other streams go on; logged like connection refusals.  So a
  limit of N bounds a client's concurrent requests to N over either protocol.
- Counting is done by the first protocol of the listener (server/mux.py), which the
  listener uses only when limits are set: without them, accepting costs what it did.
  A connection stops counting when it ends: HTTP/1.1 and HTTP/2 connections (and
  the Mux, for one closed before it decided) say so as they close (`closed`); for
  the rest (WebSocket tunnels, passthroughs) the sweeper checks the transports
  counted here twice a second, and a client at its limit has its own checked at
  once.
- A worker stopped by SIGKILL leaves its connections counted (as nginx's zones keep
  a crashed worker's counts); a worker that exits in any other way releases them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from porch.http.forwarding import TrustedProxies
from porch.limits.table import CounterTable, local_table, now_ms
from porch.server.mux import MuxSettings

LOG_EVERY = 60.0
_LOGGED_MAX = 10_000
_TOTAL = b"conn:*"


class ConnectionLimits:
    """Admits or refuses connections; remembers the ones it counted, by peer address."""

    def __init__(self, table: CounterTable, per_client: int | None, total: int | None, log) -> None:
        self.table = table
        self.per_client = per_client
        self.total = total
        self.log = log
        # peer (address, port) -> (client key, the transport accepted); and by client
        self.open: dict[tuple, tuple[bytes, asyncio.BaseTransport]] = {}
        self.by_key: dict[bytes, set[tuple]] = {}
        self.logged: dict[str, float] = {}
        # peer -> places its HTTP/2 streams hold beside the connection's own
        self.streams: dict[tuple, int] = {}

    def mux_settings(self, plain: MuxSettings | None, tls: MuxSettings | None):
        """The listeners' first protocols: the Mux on both (counting is its first step)."""
        nobody = TrustedProxies.parse(())
        return (plain or MuxSettings(nobody, None, tls=False), tls or MuxSettings(nobody, None, tls=True))

    def admit(self, ip: str, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection from `ip`; False (and logged) when over a limit."""
        key = b"conn:" + ip.encode()
        why = self._acquire(key)
        if why and self._reap(key):  # some of its own connections have closed
            why = self._acquire(key)
        if why == "max_connections" and self.reap():
            why = self._acquire(key)
        if why:
            self._refused(ip, why)
            return False
        peer = transport.get_extra_info("peername")
        self.open[peer] = (key, transport)
        self.by_key.setdefault(key, set()).add(peer)
        return True

    def closed(self, transport: asyncio.BaseTransport) -> None:
        """A connection has ended (its protocol's connection_lost): its place is free
        now, in every worker.  Any transport of it (TLS or the raw one) will do."""
        peer = transport.get_extra_info("peername")
        entry = self.open.get(peer) if peer is not None else None
        if entry is not None:
            self._forget(peer, entry[0])

    def admit_stream(self, transport: asyncio.BaseTransport) -> bool:
        """Count an HTTP/2 stream opened beside others on a counted connection; False
        (and logged) when over a limit: the caller refuses the stream."""
        peer = transport.get_extra_info("peername")
        entry = self.open.get(peer) if peer is not None else None
        if entry is None:  # not counted at accept (no such connection)
            return True
        key = entry[0]
        why = self._acquire(key)
        if why and self._reap(key):  # some of the client's other connections have closed
            why = self._acquire(key)
        if why:
            self._refused(key[5:].decode(), why, "HTTP/2 stream refused")
            return False
        self.streams[peer] = self.streams.get(peer, 0) + 1
        return True

    def stream_ended(self, transport: asyncio.BaseTransport) -> None:
        """A stream that admit_stream counted has ended."""
        peer = transport.get_extra_info("peername")
        held = self.streams.get(peer, 0) if peer is not None else 0
        if held:
            if held == 1:
                del self.streams[peer]
            else:
                self.streams[peer] = held - 1
            self._release(self.open[peer][0])

    def _forget(self, peer: tuple, key: bytes) -> None:
        for _ in range(self.streams.pop(peer, 0)):
            self._release(key)
        del self.open[peer]
        peers = self.by_key[key]
        peers.discard(peer)
        if not peers:
            del self.by_key[key]
        self._release(key)

    def _acquire(self, key: bytes) -> str:
        if self.total is not None and not self.table.acquire(_TOTAL, self.total):
            return "max_connections"
        if self.per_client is not None and not self.table.acquire(key, self.per_client):
            if self.total is not None:
                self.table.release(_TOTAL)
            return "max_connections_per_client"
        return ""

    def _release(self, key: bytes) -> None:
        if self.total is not None:
            self.table.release(_TOTAL)
        if self.per_client is not None:
            self.table.release(key)

    def _reap(self, key: bytes) -> int:
        """Forget the closed connections of one client; how many."""
        gone = [peer for peer in self.by_key.get(key, ()) if self.open[peer][1].is_closing()]
        for peer in gone:
            self._forget(peer, key)
        return len(gone)

    def reap(self) -> int:
        """Forget every closed connection that no protocol reported (a WebSocket
        tunnel's, a passthrough's): the sweeper, twice a second."""
        return sum(self._reap(key) for key in list(self.by_key))

    def release_all(self) -> None:
        """The worker is exiting: its connections are gone with it."""
        for peer, (key, _) in list(self.open.items()):
            for _ in range(1 + self.streams.get(peer, 0)):
                self._release(key)
        self.open.clear()
        self.streams.clear()
        self.by_key.clear()

    def _refused(self, ip: str, why: str, what: str = "connection refused") -> None:
        now = now_ms() / 1000
        if now - self.logged.get(ip, -LOG_EVERY) < LOG_EVERY:
            return
        if len(self.logged) >= _LOGGED_MAX:
            self.logged.clear()
        self.logged[ip] = now
        limit = self.total if why == "max_connections" else self.per_client
        self.log.warn(f"{what}: {why} {limit} reached (logged once a minute per client)",
                      client=ip)


def connection_limits(config: Any, table: CounterTable | None, log) -> ConnectionLimits | None:
    """The limiter for `config` (a config.model.Config), None when it sets no limit."""
    g = config.porch
    if g.max_connections is None and g.max_connections_per_client is None:
        return None
    return ConnectionLimits(table or local_table(), g.max_connections_per_client, g.max_connections, log)
