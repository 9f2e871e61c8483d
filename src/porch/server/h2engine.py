"""The HTTP/2 engine under server/h2conn.py: libnghttp2 (server/ngh2.pyx, compiled
when its header is there) or the pure-Python `h2` library.

Both speak the subset of `h2.connection.H2Connection` that h2conn.py and h2stream.py
call, plus `start()`; so the connection's rules (stream limit, flood guard,
flow-control hold-back, GOAWAY on drain, RFC 8441) are written once.  `[porch]
http2_engine` picks: "nghttp2", "h2" or "auto" (src/porch/_compiled.py decides).
nghttp2 costs a fraction of h2's CPU per request (bench/RESULTS.md, HTTP/2).
"""

from __future__ import annotations

import h2.connection
from h2.settings import Settings

from porch._compiled import HTTP2_ENGINES, http2_engine
from porch.http.h2 import CONNECTION_WINDOW, configuration, limits_frame, local_settings

try:
    from porch.server import ngh2
except ImportError:  # not built (no libnghttp2-dev at build time): h2 serves
    ngh2 = None

_DEFAULT_WINDOW = 65535  # RFC 9113 6.9.2: every connection starts with it

ENGINES = HTTP2_ENGINES
resolve = http2_engine  # configured -> running (src/porch/_compiled.py: what is built)


def available() -> tuple[str, ...]:
    """The engines this build can run."""
    return ("nghttp2", "h2") if ngh2 is not None else ("h2",)


class H2Engine(h2.connection.H2Connection):
    """The `h2` state machine, with the connection's start as the nghttp2 engine has it."""

    def __init__(self) -> None:
        super().__init__(config=configuration())
        self.local_settings = Settings(client=False, initial_values=local_settings())

    def start(self, max_streams: int, max_header_list_size: int) -> bytes:
        """Our SETTINGS, the connection's window, and the limits Porch enforces itself
        (http/h2.py limits_frame: h2 is not told): the bytes to write."""
        self.initiate_connection()
        self.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        return self.data_to_send() + limits_frame(max_streams, max_header_list_size)


def new_engine(name: str) -> object:
    """An engine for one connection; `name` as configured (resolved by compile.py)."""
    if name == "auto":
        name = resolve(name)
    if name == "nghttp2":
        return ngh2.NgEngine()
    return H2Engine()


def native_events() -> dict[str, type]:
    """The nghttp2 engine's event types by h2's event names (empty when not built)."""
    return dict(ngh2.EVENTS) if ngh2 is not None else {}
