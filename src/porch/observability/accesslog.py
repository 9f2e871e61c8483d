"""The access log: one line per request, written in batches.

Formats: "combined" (nginx's, with the request time in seconds appended) and
"json" (one object per line).  Lines are appended to a list on the hot path and
written by `flush()`, which the server calls every half second and at shutdown:
no logging-module call and no write(2) per request.  Each flush is one batch of
whole lines for `LineSink`, so workers sharing the file never split each other's
lines (see observability/sink.py).
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from porch.observability.sink import LineSink

# Bytes that may appear unescaped in a log field (printable ASCII minus " and \).
_SAFE = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


class LoggedExchange(Protocol):
    """What an access-log line is made of (server/proxy.py's Exchange has it)."""

    client_ip: str
    method: bytes
    target: bytes
    version: bytes
    host: str
    status: int
    upstream_status: int
    bytes_in: int
    bytes_out: int
    referer: bytes
    user_agent: bytes
    t_start: float
    t_upstream_connect: float
    t_upstream_header: float
    error: Any

    def route_label(self) -> str: ...
    def upstream_label(self) -> str: ...


def escape(value: bytes) -> str:
    """nginx's log escaping: anything outside printable ASCII, " and \\ as \\xHH."""
    if not value.translate(None, _SAFE):
        return value.decode("ascii")
    return "".join(chr(c) if c in _SAFE else "\\x%02X" % c for c in value)


class AccessLog:
    def __init__(self, path: str = "-", fmt: str = "combined") -> None:
        self.path = path
        self.enabled = path != "off"
        self._sink: LineSink | None = LineSink(path, 1) if self.enabled else None
        self.lines: list[str] = []
        self.format = self._json if fmt == "json" else self._combined
        self._second = -1
        self._stamp = ""

    def log(self, ex: LoggedExchange, now: float) -> None:
        if self.enabled:
            self.lines.append(self.format(ex, now))

    def flush(self) -> None:
        if not self.lines or self._sink is None:
            return
        lines, self.lines = self.lines, []
        # Lines are ASCII: fields are escaped (combined) or JSON with ensure_ascii.
        self._sink.write("".join(lines).encode("ascii", "backslashreplace"))

    def close(self) -> None:
        self.flush()
        if self._sink is not None:
            self._sink.close()

    def _time_local(self) -> str:
        now = int(time.time())
        if now != self._second:  # strftime once per second, not per request
            self._second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        return self._stamp

    def _combined(self, ex: LoggedExchange, now: float) -> str:
        request = b"%s %s HTTP/%s" % (ex.method, ex.target, ex.version)
        request = request.decode("ascii") if not request.translate(None, _SAFE) else escape(request)
        second = int(time.time())
        if second != self._second:
            self._time_local()
        return '%s - - [%s] "%s" %d %d "%s" "%s" %.3f\n' % (
            ex.client_ip,
            self._stamp,
            request,
            ex.status,
            ex.bytes_out,
            escape(ex.referer) if ex.referer else "-",
            escape(ex.user_agent) if ex.user_agent else "-",
            now - ex.t_start,
        )

    def _json(self, ex: LoggedExchange, now: float) -> str:
        start = ex.t_start
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "client": ex.client_ip,
            "host": ex.host,
            "method": ex.method.decode("latin-1"),
            "uri": ex.target.decode("latin-1"),
            "protocol": "HTTP/" + ex.version.decode("latin-1"),
            "route": ex.route_label(),
            "upstream": ex.upstream_label(),
            "status": ex.status,
            "upstream_status": ex.upstream_status or None,
            "bytes_in": ex.bytes_in,
            "bytes_out": ex.bytes_out,
            "duration": round(now - start, 6),
            "upstream_connect_time": _since(start, ex.t_upstream_connect),
            "upstream_header_time": _since(start, ex.t_upstream_header),
            "referer": ex.referer.decode("latin-1") or None,
            "user_agent": ex.user_agent.decode("latin-1") or None,
            "error": str(ex.error) if ex.error else None,
        }
        return json.dumps(record, separators=(",", ":")) + "\n"


def _since(start: float, t: float) -> float | None:
    return round(t - start, 6) if t else None
