"""The first protocol on a shared listener: PROXY header, ClientHello, probes, hand-over.

Used only where it has work to do (server/listener.py): on the HTTPS listener when
`[[stream]]`s are configured or TLS-ALPN-01 challenges may come (ACME sites and
`acme_challenge_type` other than "http-01"), and on any listener when
`accept_proxy_protocol` is.  Otherwise the listener is today's, untouched.

A connection, in order:
1. from an `accept_proxy_protocol` peer, a PROXY v1/v2 header is required and its
   source becomes the client address; from anyone else, a PROXY header is answered
   400 and logged (HAProxy's accept-proxy and nginx `proxy_protocol` are per
   listener; here they are per peer, so a listener serves both kinds);
2. on the HTTPS listener with streams: the ClientHello is read (tls/clienthello.py,
   at most MAX_BYTES) and matched (mux/streams.py): a passthrough splices it
   (server/splice.py); otherwise Porch's own TLS takes the connection with the bytes
   already read (`_own_tls`: the same TLS protocol the listener would have made, fed
   those bytes; no extra round trip).  A hello offering acme-tls/1 for a name with a
   pending TLS-ALPN-01 challenge is answered with the validation certificate, then
   closed (tls/alpn_challenge.py), before any stream is looked at: Porch's own names
   are never passed through for it.  Non-TLS first bytes go through sslh's probes;
   plain HTTP that no stream takes goes to Porch's plain-HTTP handling (a redirect
   to https, as on port 80);
3. bounded: a connection that has not decided within `header_timeout` is closed,
   except that one silent from the start for SSH_WAIT goes to the ssh stream (the
   SSH server speaks first: sslh's `timeout` and `on_timeout`).

Until it decides, a Mux sits in the server's `connections` as a connection reading
a request head does: a draining worker waits for it (its decision is bounded by
header_timeout), and at the end of drain_timeout closes it with a log line (`cut`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from porch.http.forwarding import TrustedProxies
from porch.mux import probes
from porch.mux import proxy_protocol as pp
from porch.mux.streams import StreamTable
from porch.server.client import ClientConnection
from porch.server import tls_layer
from porch.server.splice import Splice
from porch.tls import clienthello
from porch.tls.alpn_challenge import ACME_TLS, AlpnResponder

# sslh's default `timeout`: 2 s of silence, then the `on_timeout` protocol (ssh).
SSH_WAIT = 2.0
_BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
                b"Connection: close\r\n\r\nBad Request\n")


@dataclass(frozen=True)
class MuxSettings:
    """What one listener's first protocol does, compiled once per (re)load."""

    accept_proxy: TrustedProxies  # empty: nobody
    streams: StreamTable | None  # None: no streams (or not the HTTPS listener)
    tls: bool  # the HTTPS listener: Porch's own TLS unless a stream takes it
    acme: AlpnResponder | None = None  # TLS-ALPN-01 challenges answered here
    ssl_shutdown_timeout: float = 5.0


def mux_settings(config) -> tuple[MuxSettings | None, MuxSettings | None]:
    """The first protocols of the plain and the HTTPS listeners for `config` (a
    config.model.Config); None where today's listener stays as it is."""
    from porch.storage import FileStorage
    from porch.tls.auto import wants_acme

    g = config.porch
    accept = TrustedProxies.parse(g.accept_proxy_protocol)
    table = None
    if config.streams:
        own = tuple(h for site in config.sites if site.tls != "off" for h in site.hosts)
        table = StreamTable.build(config.streams, own)
    acme = None
    if g.acme_challenge_type != "http-01" and any(wants_acme(site) for site in config.sites):
        acme = AlpnResponder(FileStorage(g.state_dir))
    plain = MuxSettings(accept, None, tls=False) if accept else None
    tls = None
    if accept or table is not None or acme is not None:
        tls = MuxSettings(accept, table, tls=True, acme=acme)
    return plain, tls


class Mux(asyncio.Protocol):
    """Owns the connection until it knows where it goes, then hands it over."""

    __slots__ = ("server", "settings", "hosts", "transport", "buf", "offset", "peer", "local", "client_ip",
                 "proxy_source", "proxy_dest", "timer", "ssh_wait", "t_start", "decided",
                 "active", "reading", "deadline", "deadline_kind")

    def __init__(self, server, settings: MuxSettings, hosts=None) -> None:
        self.server = server
        self.settings = settings
        self.hosts = hosts  # its listener's sites (listener.py), for the HTTP it hands over
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = b""
        self.offset = -1  # where the client's own bytes start (after a PROXY header); -1: not known
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.client_ip = ""  # from the PROXY header when there is one
        self.proxy_source: tuple[str, int] | None = None  # the PROXY header's addresses
        self.proxy_dest: tuple[str, int] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ssh_wait = False  # the timer is SSH_WAIT's, not header_timeout's
        self.t_start = 0.0
        self.decided = False
        # Duck-typed as a server connection (listener.py) while undecided: never idle
        # (`active`), so a drain waits for it; its own timers bound it.
        self.active = self
        self.reading = None
        self.deadline = 0.0
        self.deadline_kind = 0

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (_unmapped(peer[0]), peer[1])  # `local`: looked up by a splice that needs it
        self.client_ip = self.peer[0]
        loop = self.server.loop
        self.t_start = loop.time()
        accept = self.settings.accept_proxy
        if not accept or not accept.contains(self.peer[0]):  # parsing the address: 3% of a handshake
            self.offset = 0
            if not self._admitted():
                return
        self.server.connections.add(self)
        if self.offset == 0:
            self._wait_for_client()
        else:
            self.timer = loop.call_later(self.server.runtime.header_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self.decided:
            return
        self.buf += data
        if self.offset < 0 and not self._read_proxy_header():
            return
        if self.offset == 0 and _looks_like_proxy(self.buf):
            self._refuse(f"PROXY protocol header from {self.peer[0]}, which is not in accept_proxy_protocol")
            return
        data = self.buf[self.offset:]
        settings = self.settings
        if settings.streams is None and (settings.acme is None or _not_acme_tls(data)):
            self._own(data)
        else:
            self._route(data)

    def eof_received(self) -> bool | None:
        if not self.decided:
            self._close(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.decided:
            self._decide()
            if self.server.limits is not None:
                self.server.limits.closed(self.transport)

    # -- as a server connection (listener.py) ------------------------------------

    def check_deadlines(self, now: float) -> None:
        pass  # its own timers: header_timeout, SSH_WAIT

    def drain(self) -> None:
        pass  # nothing to answer yet

    def shutdown(self) -> None:
        pass  # never idle: waited for, then cut

    def cut(self, cause=None) -> int:
        """drain_timeout is over (Server.shutdown) and this connection has not said
        where it goes: closed, logged.  No HTTP request is cut: returns 0."""
        if self.decided:
            return 0
        self._close(f"connection closed undecided at the end of drain_timeout"
                    f" ({len(self.buf)} bytes read)")
        self.transport.abort()
        return 0

    # -- steps -----------------------------------------------------------------

    def _read_proxy_header(self) -> bool:
        """From an accept_proxy_protocol peer: the header, required.  True once read."""
        found = pp.parse(self.buf)
        if found is pp.NEED_MORE:
            return False
        if not isinstance(found, pp.ProxyHeader):
            self._refuse(f"{found.value} from {self.peer[0]} (accept_proxy_protocol: it must send one)")
            return False
        self.offset = found.size
        if found.source is not None:
            self.client_ip = found.source[0]
            self.proxy_source, self.proxy_dest = found.source, found.dest
        if not self._admitted():
            return False
        if len(self.buf) == self.offset:
            self._cancel_timer()  # the client's own silence starts now
            self._wait_for_client()
        return True

    def _admitted(self) -> bool:
        """Connection limits (server/limits.py), once the client is known: over one,
        the connection is closed now, before any TLS."""
        limits = self.server.limits
        if limits is None or limits.admit(self.client_ip, self.transport):
            return True
        self._decide()
        self.transport.close()
        return False

    def _wait_for_client(self) -> None:
        """Nothing from the client yet: with an ssh stream, wait SSH_WAIT for it to
        speak; otherwise (or once it has) header_timeout bounds the whole decision."""
        table = self.settings.streams
        if table is not None and table.ssh is not None:
            self.ssh_wait = True
            self.timer = self.server.loop.call_later(SSH_WAIT, self._silent)
        else:
            self._keep_waiting()

    def _route(self, data: bytes) -> None:
        """Streams first, in file order; Porch's own TLS or HTTP when none matches."""
        if not data:
            return
        table = self.settings.streams
        hello = clienthello.parse(data)
        if hello is clienthello.NEED_MORE:
            if len(data) > clienthello.MAX_BYTES:
                self._own(data)  # not reachable by the parser's bounds; OpenSSL answers
            else:
                self._keep_waiting()
            return
        if isinstance(hello, clienthello.ClientHello):
            if ACME_TLS in hello.alpn and self._challenge(hello, data):
                return
            stream = table.for_hello(hello) if table is not None else None
            if stream is None:
                self._own(data)
            else:
                label = " ".join((stream.key_path, hello.server_name or "-", ",".join(hello.alpn) or "-"))
                self._splice(stream, label, data)
            return
        if hello is clienthello.MALFORMED or table is None:
            self._own(data)  # OpenSSL answers it with the right alert, as without streams
            return
        found = table.for_plain(data)
        if not isinstance(found, str):
            self._splice(found, f"{found.key_path} {found.protocol}", data)
        elif found == probes.MAYBE or probes.http(data) == probes.MAYBE:
            self._keep_waiting()
        elif probes.http(data) == probes.MATCH:
            self._own_http(data)
        else:
            self._close(f"first bytes are neither TLS nor a protocol of a [[stream]]: {data[:16]!r}")

    def _keep_waiting(self) -> None:
        """More bytes are needed: header_timeout (from the accept) bounds the wait."""
        if self.timer is None or self.ssh_wait:
            self._cancel_timer()
            self.ssh_wait = False
            remaining = self.t_start + self.server.runtime.header_timeout - self.server.loop.time()
            self.timer = self.server.loop.call_later(max(remaining, 0.0), self._timed_out)

    def _own(self, data: bytes) -> None:
        if self.settings.tls:
            self._own_tls(data)
        else:
            self._own_http(data)

    def _own_http(self, data: bytes) -> None:
        conn = self._hand_over(ClientConnection(self.server, b"http", self.hosts))
        self.transport.set_protocol(conn)
        conn.connection_made(self.transport)
        if data:
            conn.data_received(data)

    def _challenge(self, hello: clienthello.ClientHello, data: bytes) -> bool:
        """A TLS-ALPN-01 validation (RFC 8737) for a pending challenge of ours:
        answered with the validation certificate, then closed.  False: none pending."""
        acme = self.settings.acme
        if acme is None:
            return False
        log = self.server.runtime.error_log
        ctx = acme.context(hello.server_name, log)
        if ctx is None:
            return False
        self._decide()
        log.info("TLS-ALPN-01 challenge answered", client=self.client_ip, sni=hello.server_name)
        self._start_tls(_Validated(), ctx, data)
        return True

    def _own_tls(self, data: bytes) -> None:
        """Porch's TLS, as the listener would have set it up, fed the bytes read."""
        conn = self._hand_over(ClientConnection(self.server, b"https", self.hosts))
        self._start_tls(conn, self.server.runtime.tls.context, data)

    def _start_tls(self, app: asyncio.Protocol, context, data: bytes) -> None:
        """TLS with `context` between the transport and `app`, fed `data` (read already)."""
        server = self.server
        remaining = self.t_start + server.runtime.header_timeout - server.loop.time()
        tls_layer.start(server.loop, self.transport, app, context, max(remaining, 0.1),
                        self.settings.ssl_shutdown_timeout, data)

    def _decide(self) -> None:
        """The Mux lets go: the connection is someone else's (or closed)."""
        self.decided = True
        self._cancel_timer()
        self.server.connections.discard(self)

    def _hand_over(self, conn: ClientConnection) -> ClientConnection:
        self._decide()
        if self.client_ip != self.peer[0]:
            conn.peer_ip = self.client_ip  # connection_made keeps it (client.py)
        return conn

    def _splice(self, stream, label: str, data: bytes) -> None:
        self._decide()
        self.transport.pause_reading()
        splice = Splice(self.server, stream, label, self.client_ip, self.transport)
        if self.proxy_dest is None:
            local = self.transport.get_extra_info("sockname") or ("", 0)
            self.local = (_unmapped(local[0]), local[1])
        splice.start(data, self.proxy_source or self.peer, self.proxy_dest or self.local)

    # -- endings ---------------------------------------------------------------

    def _silent(self) -> None:
        """SSH_WAIT with no byte from the client: an SSH client waiting for the banner."""
        self.timer = None
        self.ssh_wait = False
        if self.decided:
            return
        if self.buf[max(self.offset, 0):]:
            self._keep_waiting()
            return
        stream = self.settings.streams.ssh
        self._splice(stream, f"{stream.key_path} ssh (client silent)", b"")

    def _timed_out(self) -> None:
        self.timer = None
        if not self.decided:
            self._close(f"nothing routable within header_timeout"
                        f" {self.server.runtime.header_timeout:g}s ({len(self.buf)} bytes)")

    def _refuse(self, cause: str) -> None:
        """A PROXY header where none may be, or none where one must be: 400, logged."""
        self.transport.write(_BAD_REQUEST)
        self._close(cause)

    def _close(self, cause: str | None) -> None:
        self._decide()
        if cause is not None:
            self.server.runtime.error_log.warn(cause, client=self.client_ip)
        self.transport.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Validated(asyncio.Protocol):
    """The application side of a TLS-ALPN-01 validation: once the handshake is done,
    close (RFC 8737 section 3: the validator sends nothing and closes too)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass


# acme-tls/1 as it appears in an ALPN list (RFC 7301 3.1: one length byte, the name)
_ACME_TLS_WIRE = bytes([len(ACME_TLS)]) + ACME_TLS.encode()


def _not_acme_tls(data: bytes) -> bool:
    """True when `data` holds a whole first TLS record without acme-tls/1 in it: not
    a TLS-ALPN-01 validation.  A substring test instead of a parse (bench/RESULTS.md:
    the parse cost ~10% of a handshake) for the listener that only waits for those.
    Validators send their hello in one record; a hello spread over records whose
    first lacks acme-tls/1 is left to Porch's TLS."""
    if len(data) < 5 or data[0] != 22:
        return len(data) >= 1 and data[0] != 22  # not TLS: Porch's TLS answers it
    if len(data) < 5 + int.from_bytes(data[3:5], "big"):
        return False  # the hello's record is not whole yet: parsed as it comes
    return _ACME_TLS_WIRE not in data


def _looks_like_proxy(data: bytes) -> bool:
    """A PROXY header (or its start) from a peer that may not send one."""
    return data.startswith(pp.V1_PREFIX) or data.startswith(pp.V2_SIGNATURE[:8])


def _unmapped(ip: str) -> str:
    return ip[7:] if ip.startswith("::ffff:") else ip
