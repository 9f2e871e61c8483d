"""The log record: what an access-log line is made of, filled once at the end of an
exchange (issue 12 item 6).

The access log reads this, never the Exchange, so the log formats can change without
touching the request lifecycle, and anything that ends a request (an HTTP/1.1 or an
HTTP/2 exchange, a test) can log one by filling a record.  Compiled (record.pxd), the
fields are typed: the Exchange fills one reusable record per process (server/proxy.py
`Exchange.account`) with C stores, no allocation a request; the access log turns it
into bytes before the next request fills it again (lines are built synchronously).
"""

from __future__ import annotations

from typing import Any


class LogRecord:
    """One finished request.  Times are the loop's clock (seconds); 0.0: never
    happened (no upstream connection, no upstream head).  Bytes fields are as the
    client sent them, escaped by each format, never here."""

    def __init__(self) -> None:
        self.client_ip = ""  # the real client (trusted proxies' X-Forwarded-For applied)
        self.host = ""  # the Host routed by, "" before routing
        self.site = "-"  # the site's name, "-": none
        self.route = "-"  # the route's path, "-": none
        self.upstream = "-"  # the target that served it, "-": none
        self.port = b""  # the local port the request came in on (vhost_combined's %p)
        self.method = b""
        self.target = b""
        self.version = b"1.1"
        self.referer = b""
        self.user_agent = b""
        self.request_id = b""
        self.user: str | None = None  # the user an auth policy let in ($remote_user)
        self.status = 0
        self.upstream_status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.t_start = 0.0
        self.t_upstream_connect = 0.0
        self.t_upstream_header = 0.0
        self.error: Any = None  # a ProxyError: why it failed
