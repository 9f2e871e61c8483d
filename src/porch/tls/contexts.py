"""SSLContexts for the HTTPS listener, and the choice of one per handshake by SNI.

One listening context (`TlsFront.context`) carries the settings every handshake
gets: protocol versions, ciphers, ALPN, session tickets.  Its `sni_callback` looks the
client's server name up in a `SniTable` (exact name, then the longest wildcard, as
routing does) and switches the handshake to that site's context, which holds only
the certificate and key.  OpenSSL keeps the version and cipher settings of the
connection's first context after the switch (SSL_set_SSL_CTX copies the certificate),
which is why every context is built by `new_context` with the same settings.

Unknown names are refused with the unrecognized_name alert (RFC 6066 section 3),
unless a catch-all site has a certificate of its own (nginx's default_server with
ssl_certificate): never another site's certificate.  A client that sends no name
(clients never send IP literals as SNI, RFC 6066 section 3) gets that default, or else
the certificate of the first site listing an IP address.

A reload builds a new table and swaps `TlsFront.table`: handshakes after the swap use
it, established connections are untouched.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from porch.routing import HostTable
from porch.tls.names import is_ip

# Mozilla's "intermediate" configuration (ssl-config.mozilla.org, version 5.7) for
# TLS 1.2; TLS 1.3 suites are OpenSSL's defaults, all of them modern AEADs.  The DHE
# suites of that list are left out: they need DH parameters nobody configures.
MOZILLA_INTERMEDIATE = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
# ALPN, in our order of preference (RFC 7301: the server picks; h2 first, as nginx and Caddy).
ALPN_H2 = ("h2", "http/1.1")
ALPN_H1 = ("http/1.1",)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class TlsSettings:
    """The `[porch]` TLS keys, shared by every HTTPS site."""

    protocols: tuple[str, ...] = ("1.2", "1.3")
    ciphers: str | None = None  # None: MOZILLA_INTERMEDIATE
    http2: bool = True  # offer h2 by ALPN


def new_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context with Porch's settings and no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[v] for v in settings.protocols)
    ctx.minimum_version = versions[0]
    ctx.maximum_version = versions[-1]
    ctx.set_ciphers(settings.ciphers or MOZILLA_INTERMEDIATE)
    # No renegotiation (a client-initiated one is a DoS lever; TLS 1.3 has none).
    # Session resumption: tickets (RFC 5077 / 8446) and the server session cache are
    # OpenSSL's defaults and stay on.  Python sets OP_CIPHER_SERVER_PREFERENCE on
    # server contexts; Mozilla intermediate would leave the choice to the client, and
    # since every suite in the list is strong, either order is fine (kept: testssl).
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(ALPN_H2 if settings.http2 else ALPN_H1)
    ctx.sslobject_class = DirectSSLObject
    return ctx


class DirectSSLObject(ssl.SSLObject):
    """ssl.SSLObject, whose `read`, `write` and `pending` are the C methods of the
    connection (`_ssl._SSLSocket`) themselves.  Where uvloop's SSLProtocol carries the
    records (server/tls_layer.py: Porch's own transport not built), it calls them a few
    times for every record each way (asyncio's too); the
    class's own methods are Python functions that only pass the call on, a frame each.
    Everything else (handshake, certificates, ALPN, unwrap) is ssl.SSLObject's."""

    @classmethod
    def _create(cls, *args, **kwargs):  # what SSLContext.wrap_bio calls
        self = super()._create(*args, **kwargs)
        conn = self._sslobj
        self.read = conn.read
        self.write = conn.write
        self.pending = conn.pending
        return self


def certificate_context(settings: TlsSettings, certfile: str, keyfile: str,
                        chainfile: str | None = None) -> ssl.SSLContext:
    """A context serving one certificate chain (PEM: leaf first) and its key;
    `chainfile`'s certificates, when given, are sent after `certfile`'s.
    Raises ssl.SSLError or OSError when the files are unreadable or do not match."""
    ctx = new_context(settings)
    if chainfile is None:
        ctx.load_cert_chain(certfile, keyfile)
    else:
        load_with_chain(ctx, certfile, keyfile, chainfile)
    return ctx


def load_with_chain(ctx: ssl.SSLContext, certfile: str, keyfile: str, chainfile: str) -> None:
    """Apache-style separate files (SSLCertificateChainFile): Python's ssl loads a
    chain from one file only, so the two are joined in an anonymous memory file
    (public certificates only; nothing is written to disk)."""
    with open(certfile, "rb") as f:
        data = f.read()
    with open(chainfile, "rb") as f:
        chain = f.read()
    joined = data if data.endswith(b"\n") else data + b"\n"
    fd = os.memfd_create("porch-chain", os.MFD_CLOEXEC)
    try:
        os.write(fd, joined + chain)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}", keyfile)
    finally:
        os.close(fd)


class CertSlot:
    """One site's certificate as handshakes see it right now.  `context` is None while
    the site waits for its certificate (ACME); the source that fills it swaps it."""

    __slots__ = ("site", "context", "waiting_noted")

    def __init__(self, site: str) -> None:
        self.site = site
        self.context: ssl.SSLContext | None = None
        self.waiting_noted = 0.0  # when a refused handshake was last logged


@dataclass(frozen=True)
class SniTable:
    """Server name -> CertSlot, built once per (re)load."""

    names: HostTable[CertSlot]
    no_sni: CertSlot | None  # for clients that send no name

    @classmethod
    def build(cls, sites: list[tuple[tuple[str, ...], CertSlot]]) -> SniTable:
        """`sites`: (hosts, slot) for each TLS site, in config order; hosts () is the
        catch-all, whose slot becomes the default for unknown names."""
        names = HostTable.build(sites)
        no_sni = names.default
        if no_sni is None:
            no_sni = next((slot for hosts, slot in sites if any(is_ip(h) for h in hosts)), None)
        return cls(names, no_sni)

    def select(self, server_name: str | None) -> CertSlot | None:
        if server_name is None:
            return self.no_sni
        return self.names.lookup(server_name.lower())


class TlsFront:
    """The listening context and the table its SNI callback reads."""

    def __init__(self, settings: TlsSettings, table: SniTable, on_refused, tickets=None) -> None:
        self.table = table
        self.on_refused = on_refused  # (server_name, slot or None) -> None: logging
        self.context = new_context(settings)
        self.context.sni_callback = self._sni
        # The key that seals session tickets, shared by the workers (tls/tickets.py):
        # OpenSSL reads it from this context, where the handshake started.
        if tickets is not None:
            tickets.install(self.context)

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        slot = self.table.select(server_name)
        if slot is None:
            self.on_refused(server_name, None)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ctx = slot.context
        if ctx is None:  # known site, certificate not there yet
            self.on_refused(server_name, slot)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        sslobj.context = ctx
        return None
