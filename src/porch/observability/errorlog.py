"""The error log: one line per event worth an operator's attention.

Lines look like nginx's, with key=value fields that say where and why:
    2026/11/23 12:00:00 [error] 4242: upstream refused: site=dav.example.org route=/
    upstream=http://127.0.0.1:5232 client=203.0.113.7 request="GET / HTTP/1.1"
Errors are rare, so each line is written at once, in one write(2) (see
observability/sink.py: workers sharing the file never split each other's lines).

Messages and fields often quote what a client sent (a header h2 refused, a request
line), so every character that is not printable is escaped here, whoever the caller,
as the access log escapes bytes: `\\xHH` (`\\uHHHH` past Latin-1).  A CR, LF or NUL
from a client never splits a line or forges one.  Field values with a space, `"` or
`\\` are quoted, `"` and `\\` inside escaped the same way.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import deque

from porch.observability.sink import LineSink


# error_log_level: the least severe level written (nginx's error_log LEVEL).
_RANK = {"debug": 0, "info": 1, "warn": 2, "error": 3}


class Recent:
    """The latest warn and error lines of a process, for the admin dashboard's "recent
    errors": a ring (the oldest fall out), each line numbered so the supervisor,
    asking again, takes only those it has not seen."""

    def __init__(self, size: int = 100) -> None:
        self.lines: deque[tuple[int, float, str, str]] = deque(maxlen=size)  # (seq, time, level, line)
        self.seq = 0

    def add(self, level: str, line: str) -> None:
        self.seq += 1
        self.lines.append((self.seq, time.time(), level, line))

    def since(self, seq: int) -> list[tuple[int, float, str, str]]:
        return [item for item in self.lines if item[0] > seq]


class ErrorLog:
    def __init__(self, path: str = "-", level: str = "info") -> None:
        self.recent: Recent | None = None  # also kept there (warn and error lines)
        self.path = path
        self._sink = LineSink(path, 2)
        self._pid = os.getpid()
        self._least = _RANK[level]
        self.debugging = self._least == 0  # callers test it before building a debug message

    def set_level(self, level: str) -> None:
        self._least = _RANK[level]
        self.debugging = self._least == 0

    def write(self, level: str, message: str, **fields: object) -> None:
        if _RANK[level] < self._least:
            return
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        extra = " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)
        line = f"{stamp} [{level}] {self._pid}: {escape(message)}"
        if extra:
            line += " " + extra
        if self.recent is not None and level in ("warn", "error"):
            self.recent.add(level, line)
        self._sink.write((line + "\n").encode("utf-8", "backslashreplace"))

    def debug(self, message: str, **fields: object) -> None:
        self.write("debug", message, **fields)

    def error(self, message: str, **fields: object) -> None:
        self.write("error", message, **fields)

    def warn(self, message: str, **fields: object) -> None:
        self.write("warn", message, **fields)

    def info(self, message: str, **fields: object) -> None:
        self.write("info", message, **fields)

    def reopen(self, path: str) -> None:
        """Write to `path` from now on (a reload changed error_log); if it cannot be
        opened, say so where lines went so far and keep writing there."""
        try:
            sink = LineSink(path, 2)
        except OSError as err:
            self.error(f"cannot open the new error_log {path}: {err.strerror}; still logging here")
            return
        self._sink.close()
        self._sink = sink
        self.path = path

    def reopen_file(self) -> None:
        """Open the same path again (SIGUSR1: logrotate moved the file away)."""
        if self.path != "-":
            self.reopen(self.path)

    def close(self) -> None:
        self._sink.close()


class _Bridge(logging.Handler):
    """Python's logging as error-log lines: what asyncio and uvloop report (an
    exception in a protocol callback, a misused transport) lands in the error log,
    traceback included in the line, not on stderr."""

    def __init__(self, log: ErrorLog) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            level = "error" if record.levelno >= logging.ERROR else "warn"
            self.log.write(level, message, logger=record.name)
        except Exception:  # never let logging raise into the event loop
            self.handleError(record)


def capture_logging(log: ErrorLog) -> None:
    """Send Python's logging (warnings and errors, every logger) to `log` from now on."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(_Bridge(log))
    root.setLevel(logging.WARNING)


def escape(text: str, quoted: bool = False) -> str:
    """`text` with what is not printable as `\\xHH` / `\\uHHHH` (and, `quoted`, `"`
    and `\\` too: the text goes between quotes)."""
    if text.isprintable() and not (quoted and ('"' in text or "\\" in text)):
        return text
    return "".join(_escaped(c) if not c.isprintable() or (quoted and c in '"\\') else c
                   for c in text)


def _escaped(c: str) -> str:
    n = ord(c)
    return "\\x%02X" % n if n < 0x100 else "\\u%04X" % n if n < 0x10000 else "\\U%08X" % n


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "\\') or not text.isprintable():
        return '"' + escape(text, quoted=True) + '"'
    return text
