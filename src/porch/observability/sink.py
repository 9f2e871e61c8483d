"""Where log lines go: a file opened O_APPEND, or stdout / stderr, written whole lines at a time.

Several worker processes write the same access log and error log.  What keeps their
lines from interleaving mid-line is how each batch reaches the kernel:

- a regular file is opened with O_APPEND and each batch goes in one write(2): Linux
  moves the offset to the end and copies the data under the inode lock, so another
  process's write lands before or after it, never inside (POSIX 2.9.7 for the offset;
  nginx relies on the same for its workers' logs);
- a pipe, FIFO, socket or terminal (stdout under a service manager or a test harness)
  keeps a write atomic only up to PIPE_BUF bytes (4096 on Linux, POSIX 2.9.7 "Pipes
  and FIFOs"): batches are cut at line ends into pieces of at most that size.  A single
  line longer than PIPE_BUF is written alone and may be split; no access log line gets
  near it unless a client sends kilobytes of request line.

Python's buffered text files would cut a batch at their buffer size, anywhere in a
line, so sinks write with os.write on the descriptor.
"""

from __future__ import annotations

import os
import select
import stat

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
STDOUT = "-"


class LineSink:
    """Appends batches of complete lines (bytes ending in b"\\n") to one destination.

    `path` is a file path or "-"; `stream` is 1 or 2, the descriptor "-" means.
    Errors (a full disk, a closed pipe) are swallowed and counted in `errors`: a log
    that cannot be written must not take the proxy down.
    """

    def __init__(self, path: str, stream: int = 1) -> None:
        self.path = path
        self.errors = 0
        if path == STDOUT:
            self.fd = stream
            self._own = False
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._own = True
        try:
            self._regular = stat.S_ISREG(os.fstat(self.fd).st_mode)
        except OSError:
            self._regular = False

    def write(self, data: bytes) -> None:
        if not data or self.fd < 0:
            return
        try:
            if self._regular:
                _write_all(self.fd, data)
            else:
                for piece in _pieces(data, PIPE_BUF):
                    _write_all(self.fd, piece)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        if self._own and self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1


def _write_all(fd: int, data: bytes) -> None:
    # A short write on a regular file happens only when the disk fills or a signal
    # interrupts it after some bytes; the rest then follows in another write.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pieces(data: bytes, limit: int):
    """`data` cut after line ends into pieces of at most `limit` bytes (a longer line
    is a piece of its own)."""
    start, end = 0, len(data)
    while end - start > limit:
        cut = data.rfind(b"\n", start, start + limit)
        if cut < 0:  # one line longer than limit: alone, up to its end
            cut = data.find(b"\n", start + limit)
            if cut < 0:
                break
        yield data[start:cut + 1]
        start = cut + 1
    if start < end:
        yield data[start:]
