"""The protocol between a client's TCP transport and its connection on HTTPS.

Porch's own (server/tls_transport.pyx: OpenSSL's record calls made from C) where it
is built and can read the SSL of Python's SSLObjects (`tls_transport.usable()`);
otherwise uvloop's SSLProtocol, as the event loop's `create_server(ssl=...)` makes
it (asyncio's on another loop).  PORCH_UVLOOP_TLS=1 picks uvloop's where both are
there (the benchmark's side-by-side, the tests of the fallback).
"""

from __future__ import annotations

import asyncio
import os

_native = None


def _why_not() -> str | None:
    global _native
    if os.environ.get("PORCH_UVLOOP_TLS") == "1":
        return "PORCH_UVLOOP_TLS=1"  # not even imported
    try:
        from porch.server import tls_transport
    except ImportError:  # not built: libssl-dev was missing, or no compiler
        return "server/tls_transport.pyx is not built (libssl-dev missing when porch was built)"
    _native = tls_transport
    return tls_transport.usable()


# None: Porch's TLS transport serves; else why uvloop's does.
NOT_NATIVE = _why_not()


def describe() -> str:
    """What reads and writes TLS records in this process (`porch version`)."""
    if NOT_NATIVE is None:
        return "Porch's transport (server/tls_transport.pyx)"
    return f"uvloop's SSLProtocol ({NOT_NATIVE})"


def ssl_protocol_class(loop: asyncio.AbstractEventLoop):
    """uvloop's SSLProtocol (Cython, what its create_server uses) on a uvloop loop,
    asyncio's otherwise.  Both take (loop, app_protocol, context, waiter, server_side,
    ...) and are buffered protocols: get_buffer/buffer_updated take bytes read."""
    known = _SSL_PROTOCOL.get(type(loop))
    if known is None:
        known = _SSL_PROTOCOL[type(loop)] = _find_ssl_protocol_class(loop)
    return known


_SSL_PROTOCOL: dict[type, type] = {}  # by loop class: looked up once, not per handshake


def _find_ssl_protocol_class(loop: asyncio.AbstractEventLoop):
    try:
        import uvloop
        from uvloop.loop import SSLProtocol
        if isinstance(loop, uvloop.Loop):
            return SSLProtocol
    except ImportError:
        pass
    from asyncio.sslproto import SSLProtocol as AsyncioSSLProtocol
    return AsyncioSSLProtocol


def _consume(fut: asyncio.Future) -> None:
    """A failed handshake is the client's business: nothing to log."""
    if not fut.cancelled():
        fut.exception()


def start(loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, app: asyncio.Protocol,
          context, handshake_timeout: float, shutdown_timeout: float, data: bytes = b"") -> None:
    """TLS with `context` between the TCP `transport` and `app`, fed `data` (the bytes
    of the handshake read already, by the Mux)."""
    if NOT_NATIVE is None:
        layer = _native.TlsTransport(loop, app, context, handshake_timeout, shutdown_timeout)
        transport.set_protocol(layer)
        layer.connection_made(transport)
        if data:
            layer.data_received(data)
        return
    waiter = loop.create_future()
    waiter.add_done_callback(_consume)
    ssl_protocol = ssl_protocol_class(loop)(
        loop, app, context, waiter, server_side=True, server_hostname=None,
        ssl_handshake_timeout=handshake_timeout, ssl_shutdown_timeout=shutdown_timeout)
    transport.set_protocol(ssl_protocol)
    ssl_protocol.connection_made(transport)
    view = memoryview(data)
    while view:
        buf = ssl_protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        ssl_protocol.buffer_updated(n)
        view = view[n:]


def factory(loop: asyncio.AbstractEventLoop, app_factory, context, handshake_timeout,
            shutdown_timeout: float):
    """create_server's protocol factory for a TLS listener served by Porch's transport:
    each accepted connection gets a TlsTransport around `app_factory()`.
    `handshake_timeout()` is read at each accept (a reload may change it)."""
    native = _native.TlsTransport

    def make():
        return native(loop, app_factory(), context, handshake_timeout(), shutdown_timeout)
    return make
