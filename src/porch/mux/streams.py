"""Which `[[stream]]` a connection on the HTTPS port goes to: decided, no I/O.

Built once per (re)load from the config model; server/mux.py asks it with what the
connection sent first.  The streams are tried in file order and the first match wins
(sslh's order of probes; nginx's `ssl_preread` map is first-match too).  A TLS
connection that matches none goes to Porch's own TLS (`None`).
"""

from __future__ import annotations

from dataclasses import dataclass

from porch.config.model import Stream
from porch.mux import probes
from porch.tls.clienthello import ClientHello

# RFC 8737: a TLS-ALPN-01 validation offers only this protocol.  Porch's own names
# answer it themselves (never passed through): their challenges are Porch's.
ACME_TLS = "acme-tls/1"


@dataclass(frozen=True)
class StreamTable:
    streams: tuple[Stream, ...]
    plain: tuple[Stream, ...]  # the non-TLS ones, in file order
    plain_protocols: tuple[str, ...]  # their protocols, for probes.detect
    ssh: Stream | None  # where a client that says nothing goes (SSH: the server speaks first)
    own_names: frozenset[str]  # Porch's own TLS sites' exact names, for ACME_TLS

    @classmethod
    def build(cls, streams: tuple[Stream, ...], own_names: tuple[str, ...] = ()) -> StreamTable:
        plain = tuple(s for s in streams if s.protocol != "tls")
        ssh = next((s for s in plain if s.protocol == "ssh"), None)
        return cls(streams, plain, tuple(s.protocol for s in plain), ssh, frozenset(own_names))

    def for_hello(self, hello: ClientHello) -> Stream | None:
        """The first TLS stream `hello` matches; None: Porch's own TLS serves it."""
        if ACME_TLS in hello.alpn and hello.server_name in self.own_names:
            return None
        for stream in self.streams:
            if stream.protocol == "tls" and _matches(stream, hello):
                return stream
        return None

    def for_plain(self, data: bytes) -> Stream | str:
        """The first plain stream whose probe matches `data`, or probes.MAYBE (wait for
        more bytes) or probes.NO (none matches: not for a stream)."""
        found = probes.detect(data, self.plain_protocols)
        return self.plain[found] if isinstance(found, int) else found


def _matches(stream: Stream, hello: ClientHello) -> bool:
    if stream.sni and not (hello.server_name and _name_in(hello.server_name, stream.sni)):
        return False
    if stream.alpn and not any(p in stream.alpn for p in hello.alpn):
        return False
    return True


def _name_in(name: str, patterns: tuple[str, ...]) -> bool:
    """Exact names, and "*.example.org" for any name below example.org (sslh's and
    nginx map's wildcards match any depth; a certificate's only one: TLS is not
    terminated here, so no certificate rule applies)."""
    for pattern in patterns:
        if pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False
