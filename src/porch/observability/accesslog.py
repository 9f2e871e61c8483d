"""The access log: one line per request, written in batches.

Formats (`access_log_format`):
- "combined": nginx's, with the request time in seconds and the request id
  (X-Request-ID) appended;
- "vhost_combined": the same with "site:port " in front (Apache's, as Debian's
  other_vhosts_access.log), which a file shared by several sites gets by default
  (config/compile.py);
- "json": one object per line (`request_id` among its keys), for Loki or Elasticsearch.

A line is made from a `LogRecord` (observability/record.py) that the exchange fills
at its end, never from the Exchange itself.  Lines are appended to a list on the hot
path and written by `flush()`, which the server calls every half second and at
shutdown: no logging-module call and no write(2) per request.  Each flush is one batch
of whole lines for `LineSink`, so workers sharing the file never split each other's
lines (see observability/sink.py).
"""

from __future__ import annotations

import json
import time

from porch.observability.record import LogRecord
from porch.observability.sink import LineSink

# Bytes that may appear unescaped in a log field (printable ASCII minus " and \).
_SAFE = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')

FORMATS = ("combined", "vhost_combined", "json")


# Lines written at once at most: at 60k requests/s, half a second of lines is 3 MB,
# and one write(2) of that stalls the loop for milliseconds (Porch's p99 in bench/);
# 256 lines (~25 KiB) is one write per few milliseconds instead.
FLUSH_LINES = 256

_COMPILED = not __file__.endswith(".py")  # built by setup.py into an extension module


def plain(value: bytes) -> bool:
    """True when `value` needs no escaping (the usual case: checked on every line)."""
    if not _COMPILED:
        return not value.translate(None, _SAFE)
    # Compiled, a loop in C (accesslog.pxd types `c`); translate() builds two
    # 256-byte tables per call, ~1,000 instructions (bench/hotpath.py).
    for c in value:
        if c < 0x20 or c > 0x7E or c == 0x22 or c == 0x5C:
            return False
    return True


def escape(value: bytes) -> str:
    """nginx's log escaping: anything outside printable ASCII, " and \\ as \\xHH."""
    if not value.translate(None, _SAFE):
        return value.decode("ascii")
    return "".join(chr(c) if c in _SAFE else "\\x%02X" % c for c in value)


class AccessLog:
    """Compiled, an extension type (accesslog.pxd) that reads the record's typed
    fields directly; lines are ASCII bytes (fields escaped, JSON ensure_ascii)."""

    def __init__(self, path: str = "-", fmt: str = "combined") -> None:
        self.path = path
        self.format = fmt
        self.enabled = path != "off"
        self._sink: LineSink | None = LineSink(path, 1) if self.enabled else None
        # The lines not written yet, as pieces: a combined line is appended as the 15
        # pieces it is made of and joined with the others at flush (one join per batch,
        # not one per line: ~1,500 instructions a request, bench/hotpath.py).
        self.lines: list[bytes] = []
        self.count = 0  # lines in it
        self.json = fmt == "json"
        self.vhost = fmt == "vhost_combined"
        self._next_second = 0.0  # loop time at which the stamp goes stale
        self._stamp = b""  # ' - - [$time_local] "'
        # Memos of the line's pieces (each is made once, then one dict lookup: an int's
        # or str's formatting and encoding cost more than the rest of the line).
        self._durations: dict[int, bytes] = {}  # ms -> b'" 0.004\n'
        self._ips: dict[str, bytes] = {}
        self._statuses: dict[int, bytes] = {}  # 200 -> b"200 "
        self._sizes: dict[int, bytes] = {}  # $body_bytes_sent

    def log(self, rec: LogRecord, now: float) -> None:
        """One line for `rec`, a request that ended at `now` (the loop's clock)."""
        if self.enabled:
            if self.json:
                self.lines.append(json_line(rec, now, time.time()))
            else:
                if self.vhost:  # Apache's "%v:%p " (vhost_combined)
                    self.lines.append(b"%s:%s " % (rec.site.encode(), rec.port or b"-"))
                self._combined(rec, now)
            self.count += 1
            if self.count >= FLUSH_LINES:
                self.flush()

    def stream(self, client_ip: str, what: str, status: int, sent: int, received: int,
               duration: float, now: float) -> None:
        """One line for a passed-through connection (server/splice.py), when it ends:
        `what` is the request field ("PASSTHROUGH stream[0] chat.example.com ->
        127.0.0.1:5223"), `sent`/`received` the bytes to/from the client.  Combined
        format: the size field is the bytes sent, the referer field the bytes received
        (nginx stream's $bytes_sent / $bytes_received), the duration last."""
        if not self.enabled:
            return
        if self.json:
            record = {
                "time": _rfc3339(time.time()), "client_ip": client_ip,
                "stream": what, "status": status, "bytes_in": received, "bytes_out": sent,
                "duration": round(duration, 6),
            }
            self.lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        else:
            if now >= self._next_second:
                self._refresh_stamp(now)
            self.lines.append(b'%s%s%s" %d %d "%d" "-" %.3f\n' % (
                client_ip.encode(), self._stamp, escape(what.encode()).encode(), status, sent,
                received, duration))
        self.count += 1
        if self.count >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if not self.lines or self._sink is None:
            return
        lines, self.lines = self.lines, []
        self.count = 0
        self._sink.write(b"".join(lines))

    def close(self) -> None:
        self.flush()
        if self._sink is not None:
            self._sink.close()

    def reopen(self) -> str | None:
        """Open the file again by its name, as nginx's `reopen` (SIGUSR1): logrotate
        moved it away.  Returns why it could not be, the old file kept, or None."""
        if self._sink is None or self.path == "-":
            return None
        self.flush()
        try:
            sink = LineSink(self.path, 1)
        except OSError as err:
            return f"cannot reopen the access log {self.path}: {err.strerror}; still writing to the old file"
        self._sink.close()
        self._sink = sink
        return None

    def _refresh_stamp(self, now: float) -> None:
        """$time_local, made once per second: `now` is the loop's clock; the wall
        clock is read only when the second it showed has passed."""
        wall = time.time()
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(wall)).encode()
        self._stamp = b' - - [' + stamp + b'] "'
        self._next_second = now + (1.0 - wall % 1.0)

    def _combined(self, ex: LogRecord, now: float) -> None:
        """Append the line's pieces to `lines`."""
        if now >= self._next_second:
            self._refresh_stamp(now)
        target = ex.target
        if not plain(target):
            target = escape(target).encode()
        # Milliseconds as "s.mmm", memoised: "%.3f" % float costs more than the
        # rest of the line (bench/hotpath.py); most requests take a few ms.
        ms = int((now - ex.t_start) * 1000.0)
        duration = self._durations.get(ms)
        if duration is None:
            duration = b'" %d.%03d ' % (ms // 1000, ms % 1000)
            if ms < 10_000:
                self._durations[ms] = duration
        ip = self._ips.get(ex.client_ip)
        if ip is None:
            ip = _remember(self._ips, ex.client_ip, ex.client_ip.encode())
        status = self._statuses.get(ex.status)
        if status is None:
            status = _remember(self._statuses, ex.status, b"%d " % ex.status)
        size = self._sizes.get(ex.bytes_out)
        if size is None:
            size = _remember(self._sizes, ex.bytes_out, b"%d" % ex.bytes_out)
        version = ex.version
        referer = ex.referer
        agent = ex.user_agent
        lines = self.lines  # appends: compiled, C-level appends to a typed list
        lines.append(ip)
        if not ex.user:
            lines.append(self._stamp)
        else:  # $remote_user: the user an auth policy let in
            lines.append(b" - " + _user(ex.user) + self._stamp[4:])
        lines.append(ex.method)
        lines.append(b" ")
        lines.append(target)
        lines.append(_V11 if version == b"1.1" else b' HTTP/%s" ' % version)
        lines.append(status)
        lines.append(size)
        lines.append(b' "')
        lines.append((referer if plain(referer) else escape(referer).encode()) if referer else b"-")
        lines.append(b'" "')
        lines.append((agent if plain(agent) else escape(agent).encode()) if agent else b"-")
        lines.append(duration)
        lines.append(ex.request_id)  # token characters only (server/proxy.py)
        lines.append(b"\n")


_V11 = b' HTTP/1.1" '


def _user(name: str) -> bytes:
    """A user name for the combined line: escaped as the other fields, no spaces (a
    field of its own)."""
    raw = name.encode()
    text = raw if plain(raw) else escape(raw).encode()
    return text.replace(b" ", b"\\x20")


# Entries a memo keeps at most: a client or size never seen again costs nothing much.
MEMO_LIMIT = 4096


def _remember(memo: dict, key, value: bytes) -> bytes:
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value


def _since(start: float, t: float) -> float | None:
    return round(t - start, 6) if t else None


def json_line(rec: LogRecord, now: float, wall: float) -> bytes:
    """One JSON object and a newline, for Loki or Elasticsearch: `time` in RFC 3339
    with milliseconds (`wall`, the clock when the request ended), durations in seconds.

    What a client sent (target, user agent, referer) is decoded as UTF-8, the bytes
    that are not UTF-8 written as the text `\\xHH`, and json.dumps escapes the rest
    (quotes, backslashes, control characters; everything past ASCII as \\uHHHH): a
    line stays one object with these keys whatever the client sends."""
    start = rec.t_start
    record = {
        "time": _rfc3339(wall),
        "site": rec.site,
        "host": rec.host,
        "route": rec.route,
        "client_ip": rec.client_ip,
        "method": _text(rec.method),
        "target": _text(rec.target),
        "protocol": "HTTP/" + _text(rec.version),  # HTTP/2.0: as the combined line says
        "status": rec.status,
        "bytes_in": rec.bytes_in,
        "bytes_out": rec.bytes_out,
        "duration": round(now - start, 6),
        "upstream": rec.upstream,
        "upstream_status": rec.upstream_status or None,
        "upstream_connect_time": _since(start, rec.t_upstream_connect),
        "upstream_header_time": _since(start, rec.t_upstream_header),
        # nginx's $upstream_response_time: connected to the end of the response
        "upstream_time": _since(rec.t_upstream_connect, now) if rec.t_upstream_connect else None,
        "user": rec.user or None,
        "user_agent": _text(rec.user_agent) or None,
        "referer": _text(rec.referer) or None,
        "request_id": _text(rec.request_id),
        "error": str(rec.error) if rec.error else None,
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def _rfc3339(wall: float) -> str:
    """2026-12-02T17:50:00.123+01:00: local time, as the combined format's."""
    local = time.localtime(wall)
    offset = local.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    return "%s.%03d%s%02d:%02d" % (time.strftime("%Y-%m-%dT%H:%M:%S", local), int(wall % 1.0 * 1000),
                                   sign, abs(offset) // 60, abs(offset) % 60)
