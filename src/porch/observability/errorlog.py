"""The error log: one line per event worth an operator's attention.

Lines look like nginx's, with key=value fields that say where and why:
    2026/11/23 12:00:00 [error] 4242: upstream refused: site=dav.example.org route=/
    upstream=http://127.0.0.1:5232 client=203.0.113.7 request="GET / HTTP/1.1"
Errors are rare, so each line is written and flushed at once.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


class ErrorLog:
    def __init__(self, path: str = "-") -> None:
        self.path = path
        self._file: TextIO = sys.stderr if path == "-" else open(path, "a", buffering=1)
        self._pid = os.getpid()

    def write(self, level: str, message: str, **fields: object) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        extra = " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)
        line = f"{stamp} [{level}] {self._pid}: {message}"
        if extra:
            line += " " + extra
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except (OSError, ValueError):  # a full disk must not take the proxy down
            pass

    def error(self, message: str, **fields: object) -> None:
        self.write("error", message, **fields)

    def warn(self, message: str, **fields: object) -> None:
        self.write("warn", message, **fields)

    def info(self, message: str, **fields: object) -> None:
        self.write("info", message, **fields)

    def close(self) -> None:
        if self._file not in (sys.stderr, sys.stdout):
            self._file.close()


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "\\') or not text.isprintable():
        return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return text
