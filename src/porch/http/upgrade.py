"""HTTP/1.1 Upgrade (RFC 9110 7.8): which protocol switches Porch passes on.

Only WebSocket (RFC 6455 4.1) is forwarded: the request goes upstream with
`Connection: upgrade` and `Upgrade: websocket`, and a 101 answer turns both
connections into a tunnel (server/tunnel.py).  Every other upgrade is dropped,
h2c first of all (RFC 7540 3.2, gone from RFC 9113 3.1): a switch to HTTP/2 behind
Porch's back would carry later requests past its routing and policies.  The
request then goes upstream as a plain HTTP/1.1 request, without Upgrade,
HTTP2-Settings or their Connection tokens, and is answered as such: a server may
ignore Upgrade (RFC 9110 7.8), so the client carries on in HTTP/1.1.
"""

from __future__ import annotations

# Added to the head sent upstream, and to the 101 relayed to the client (the
# originals are hop-by-hop, dropped with the rest: RFC 9110 7.6.1).
WEBSOCKET_LINES = b"Upgrade: websocket\r\nConnection: upgrade\r\n"

# Request headers that only make sense with an upgrade Porch does not forward
# (RFC 7540 3.2.1: HTTP2-Settings is a connection option), dropped whatever
# Connection lists.  Lowercase.
DROPPED = frozenset({b"http2-settings"})


def is_websocket(upgrade: bytes) -> bool:
    """True when an Upgrade header value asks for WebSocket (case-insensitive,
    RFC 6455 4.2.1); a list offering several protocols is not forwarded."""
    return upgrade.strip().lower() == b"websocket"


class BodyAfterUpgrade:
    """Stands in for the request parser while the body of an upgrade request that is
    not forwarded (h2c on a POST: curl --http2 sends those) goes by.

    llhttp ends such a request at its head and leaves the body in what follows, so
    the body is counted out here: `on_body(chunk)` for each piece of the next
    `length` bytes, then `on_done(rest)` once with what comes after it.  It has
    `feed_data`, the one method the client connection calls on its parser.
    """

    __slots__ = ("remaining", "on_body", "on_done")

    def __init__(self, length: int, on_body, on_done) -> None:  # type: ignore[no-untyped-def]
        self.remaining = length
        self.on_body = on_body
        self.on_done = on_done

    def feed_data(self, data: bytes) -> None:
        n = self.remaining
        if len(data) < n:
            self.remaining = n - len(data)
            self.on_body(data)
            return
        self.remaining = 0
        if n:
            self.on_body(data[:n])
        self.on_done(data[n:])
