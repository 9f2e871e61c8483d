"""The seam between an upstream connection and whoever leases it.

`upstream/connection.py` parses one response at a time and hands it, piece by piece,
to its current listener: the server's Exchange (a client's request), or anything
else that sends a request through the same pools (forward_auth's subrequest,
policies/forward_auth.py; a health probe).  Compiled, this is an extension type
(listener.pxd) whose methods are C-level virtual calls: the connection's calls cost
what they cost when it was bound to the Exchange alone.

The contract, in the order the connection calls:
- `on_response_head(status, reason, lines, special, keep_alive)` for each head,
  1xx included: `lines` the flat [name, b": ", value, b"\\r\\n", ...] fields to copy,
  `special` [(kind, name, value)] of the fields h1.RESPONSE_HEADERS flags (framing,
  Connection, Location, Refresh) or None; `keep_alive`: the connection may be reused;
- `on_response_body(data)` per body piece, then `on_response_end()`;
- `flush()` after each read, when `out` is not None (the Exchange gathers its writes);
- `on_upstream_lost(cause, got_bytes)`: the connection broke or closed first;
- `on_upstream_paused(paused)`: the connection's write buffer passed (or fell under)
  its high-water mark;
- `on_upstream_upgrade(transport, rest) -> bool` after a 101: True when it took the
  transport over.
The connection sets `up_seen` on every read (the server's sweeper reads it).
"""

from __future__ import annotations

from typing import Any


class UpstreamListener:
    """What an upstream connection calls back.  The defaults ignore everything (a
    listener overrides what it uses); `on_upstream_upgrade` refuses a switch."""

    __slots__ = ("up_seen", "out")

    def __init__(self) -> None:
        self.up_seen = False
        self.out = None

    def on_response_head(self, status: int, reason: bytes, lines: list, special: Any,
                         keep_alive: bool) -> None:
        return None

    def on_response_body(self, data: bytes) -> None:
        return None

    def on_response_end(self) -> None:
        return None

    def flush(self) -> None:
        return None

    def on_upstream_lost(self, cause: str, got_bytes: bool) -> None:
        return None

    def on_upstream_paused(self, paused: bool) -> None:
        return None

    def on_upstream_upgrade(self, transport: Any, rest: bytes) -> bool:
        return False
