"""The serving side of one process: listening sockets, connections, the sweeper.

`Server` holds the current Runtime (one reference, swapped on reload), the set of
live client connections and of tunnels (server/tunnel.py), and a sweeper task that
checks their deadlines twice a second, expires idle upstream connections and
flushes the access log.

`Server.shutdown` is the drain used both to stop (SIGTERM) and to retire a worker
replaced by a reload: stop accepting, answer every request not yet answered with
`Connection: close`, close idle connections, wait for the rest up to a timeout.
`connections` also holds the port-sharing ones (server/mux.py): connections not yet
routed and passthrough splices, waited for like requests in flight.
"""

from __future__ import annotations

import asyncio
import socket

from porch.errors import INTERNAL, ProxyError
from porch.routing import HostTable
from porch.runtime import Runtime
from porch.server import tls_layer
from porch.server.client import _D_IDLE, ClientConnection
from porch.server.limits import ConnectionLimits
from porch.server.mux import Mux, MuxSettings
from porch.server.tunnel import Tunnel

SWEEP_INTERVAL = 0.5
# While draining, an idle keep-alive connection (or one just accepted) stays open this
# long: a client that sends its next request right away gets it answered with
# `Connection: close` instead of having the connection shut under the request it is
# sending.  Without it, every reload under steady keep-alive traffic resets some
# requests (HAProxy restored the same wait as `option idle-close-on-response`).
IDLE_GRACE = 0.5
# Listen backlog: nginx uses 511 on Linux.
BACKLOG = 511
SSL_SHUTDOWN_TIMEOUT = 5.0
# What the requests cut when a drain runs out are logged with (not "client closed").
DRAIN_TIMEOUT = ProxyError(0, INTERNAL, "drain timeout")


class Server:
    def __init__(self, loop: asyncio.AbstractEventLoop, runtime: Runtime, scheme: bytes = b"http") -> None:
        self.loop = loop
        self.runtime = runtime
        self.scheme = scheme
        self.connections: set[ClientConnection] = set()
        self.tunnels: set[Tunnel] = set()  # connections past a 101, no longer HTTP
        self.servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task | None = None
        # Set by shutdown(): requests parsed from then on are answered with
        # Connection: close (each ClientConnection has its copy, read per request head).
        self.draining = False
        # The first protocol of the plain and the HTTPS listeners when they share their
        # port ([[stream]]) or read PROXY headers (server/mux.py); None: as always.
        self.mux_plain: MuxSettings | None = None
        self.mux_tls: MuxSettings | None = None
        # Connection limits (server/limits.py), counted by the Mux; None: no limit.
        self.limits: ConnectionLimits | None = None

    async def listen(self, sockets: list[socket.socket], tls_sockets: list[socket.socket] = ()) -> None:
        """Serve plain HTTP on `sockets` and HTTPS on `tls_sockets` (runtime.tls must
        be set then: its context picks each handshake's certificate by SNI)."""
        for sock in sockets:
            await self.add_listener(sock, tls=False)
        for sock in tls_sockets:
            await self.add_listener(sock, tls=True)
        self._sweeper = self.loop.create_task(self._sweep())

    async def add_listener(self, sock: socket.socket, tls: bool) -> asyncio.AbstractServer:
        """Accept connections on one more socket (also after listen()).  `tls`: the
        kind of its listener in the model (config/listeners.py); its connections
        route among the sites of that listener (Runtime.listener_hosts)."""
        hosts = self.listener_hosts(sock)
        mux = self.mux_tls if tls else self.mux_plain
        if mux is not None:  # TLS, if any, is started by the Mux once it has read the hello
            server = await self.loop.create_server(lambda: Mux(self, mux, hosts), sock=sock, backlog=BACKLOG)
        elif tls and tls_layer.NOT_NATIVE is None:  # Porch's TLS transport (server/tls_layer.py)
            factory = tls_layer.factory(
                self.loop, lambda: ClientConnection(self, b"https", hosts), self.runtime.tls.context,
                # the handshake is part of the request head's time (nginx bounds it
                # with client_header_timeout too); read per accept (reloads change it)
                lambda: self.runtime.header_timeout, SSL_SHUTDOWN_TIMEOUT)
            server = await self.loop.create_server(factory, sock=sock, backlog=BACKLOG)
        elif tls:
            server = await self.loop.create_server(
                lambda: ClientConnection(self, b"https", hosts), sock=sock, backlog=BACKLOG,
                ssl=self.runtime.tls.context,
                # the handshake is part of the request head's time (nginx bounds it
                # with client_header_timeout too)
                ssl_handshake_timeout=self.runtime.header_timeout,
                # A closing TLS connection waits this long for the client's close_notify
                # (uvloop's default: 30 s, which could hold a draining worker as long).
                ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT,
            )
        else:
            server = await self.loop.create_server(lambda: ClientConnection(self, None, hosts), sock=sock,
                                                   backlog=BACKLOG)
        self.servers.append(server)
        return server

    def listener_hosts(self, sock: socket.socket) -> HostTable | None:
        """The host table of the listener `sock` is bound to; None: every site's."""
        tables = self.runtime.listener_hosts
        if not tables or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        address, port = sock.getsockname()[:2]
        return tables.get((address, port))

    def remove_listener(self, server: asyncio.AbstractServer) -> None:
        """Stop accepting on one socket (its connections carry on)."""
        server.close()
        if server in self.servers:
            self.servers.remove(server)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep_once()

    def sweep_once(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check_deadlines(now)
        if self.tunnels:
            for tunnel in list(self.tunnels):
                tunnel.check(now)
        for target in self.runtime.targets:
            target.expire(now)
        if self.limits is not None:
            self.limits.reap()
        if self.runtime.health is not None:
            self.runtime.health.poll()  # probe results from the supervisor (upstream/prober.py)
        for log in self.runtime.access_logs:  # [porch]'s and the sites' own
            log.flush()
        if self.runtime.tls is not None:
            self.runtime.tls.refresh()  # certificate files changed, leaves due

    def stop_accepting(self) -> None:
        """Close this process's listening sockets (others holding them keep accepting)
        and answer requests parsed from now on with Connection: close."""
        self.draining = True
        for conn in self.connections:
            if isinstance(conn, ClientConnection):  # not the HTTP/2 ones
                conn.draining = True
        for server in self.servers:
            server.close()

    async def shutdown(self, timeout: float, idle_grace: float = IDLE_GRACE) -> None:
        """Stop accepting, let in-flight requests finish up to `timeout`, close the rest.

        Requests whose response has not started are answered with Connection: close.
        A connection idle now, or idle after its response, is closed once it has been
        idle for `idle_grace` seconds since the drain began (see IDLE_GRACE).
        Connections still open at `timeout` are cut: their requests are logged with
        the cause `drain timeout` (not as clients that left), and the error log says
        how many were cut.
        """
        self.stop_accepting()
        loop = self.loop
        start = loop.time()
        for conn in list(self.connections):
            conn.drain()
        deadline = start + timeout
        keepalive = self.runtime.keepalive_timeout
        while self.connections:
            now = loop.time()
            if now >= deadline:
                break
            for conn in list(self.connections):
                if conn.active is None and conn.reading is None:
                    # Idle since the end of its last response (its keep-alive deadline
                    # minus the timeout), or since it was accepted or the drain began.
                    idle_since = max(start, conn.deadline - keepalive) if conn.deadline_kind == _D_IDLE else start
                    if now >= idle_since + idle_grace:
                        conn.shutdown()
            await asyncio.sleep(0.05)
        if self.connections:
            self._cut(timeout)
        # Tunnels have no request to finish: they close once the requests are done,
        # as Caddy closes WebSockets on reload (stream_close_delay 0); clients reconnect.
        for tunnel in list(self.tunnels):
            tunnel.close()
        # connection_lost runs on the next turns of the loop: it ends (and logs)
        # the requests that were cut; only then is the access log closed.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for target in self.runtime.targets:
            target.close_all()
        if self.limits is not None:
            self.limits.release_all()
        for log in self.runtime.access_logs:
            log.close()
        for log in self.runtime.error_logs[1:]:  # the sites' own; [porch]'s is the worker's to close
            log.close()

    def _cut(self, timeout: float) -> None:
        """The drain ran out of time: cut what is still open, and say so once."""
        requests = 0
        connections = list(self.connections)
        for conn in connections:
            requests += conn.cut(DRAIN_TIMEOUT)
        self.runtime.error_log.warn(
            f"drain timeout: {len(connections)} connection(s) still open after {timeout:g}s cut, "
            f"{requests} request(s) unfinished", connections=len(connections), requests=requests)


def bind_sockets(addresses: tuple[str, ...], port: int, reuse_port: bool = False,
                 listen: bool = True) -> list[socket.socket]:
    """Open listening sockets, one per address.  "::" is bound IPv6-only, so that
    "0.0.0.0" and "::" can both be listed (the default) without a clash.

    `reuse_port` sets SO_REUSEPORT: several sockets on one address, the kernel
    spreading new connections over them (server/supervisor.py gives each worker its
    own, so that workers share the load evenly).  Without `listen` the sockets are
    only bound: whoever serves them listens (asyncio's create_server does)."""
    socks = []
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
            if listen:
                sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            for s in socks:
                s.close()
            raise
        socks.append(sock)
    return socks
