"""Sending a file body (pipeline.FileBody) without holding it in memory.

The exchange streams a file in pieces of CHUNK bytes, at most TURN bytes per turn of
the event loop (then it yields, so one fast reader cannot starve the others), and
stops while the client's side is paused (its transport over the high-water mark, or
an HTTP/2 stream out of window); `resume_writing` goes on.

Where a piece goes:
- plain HTTP/1.1 whose transport has nothing buffered: `os.sendfile` on the socket
  (zero-copy, as nginx's `sendfile on`).  uvloop's `loop.sendfile` is asyncio's
  abstract one (NotImplementedError), so the socket is written directly, which is
  safe only while the transport holds nothing to write before it; a full socket
  (EAGAIN) falls back to the next case, and the transport's buffer then paces us.
- otherwise (TLS, HTTP/2, a transport with bytes queued): `os.pread` of CHUNK
  bytes, written through the transport or the stream's flow control.

Reads run on the event loop, CHUNK at a time: from the page cache that is tens of
microseconds; a cold disk stalls the loop for one read, as nginx without `aio
threads` does.  An executor would cost a thread hop per piece for every file, so it
is not used; small files (policies/root.py SMALL_FILE) are read whole at once.
"""

from __future__ import annotations

import os

from porch.pipeline import FileBody

CHUNK = 128 * 1024  # nginx's sendfile_max_chunk is 2m; smaller keeps turns short
TURN = 1024 * 1024  # bytes per event loop turn before yielding to other connections


class FileShrank(OSError):
    """The file ended before its announced length (truncated while being sent)."""


def plain_socket_fd(transport: object) -> int:
    """The socket's fd when the transport is a plain TCP one (sendfile may write it
    directly), else -1 (TLS, a stream's transport, anything unknown)."""
    get = getattr(transport, "get_extra_info", None)
    if get is None or get("ssl_object") is not None or get("sslcontext") is not None:
        return -1
    sock = get("socket")
    if sock is None:
        return -1
    try:
        return sock.fileno()
    except (OSError, AttributeError):
        return -1


def sendfile(sock_fd: int, body: FileBody, size: int) -> int:
    """Up to `size` bytes of `body` written straight to the socket; 0 when the socket
    takes nothing now (EAGAIN).  `body` moves past what was sent."""
    try:
        sent = os.sendfile(sock_fd, body.fd, body.offset, size)
    except BlockingIOError:
        return 0
    if sent == 0:  # end of the file: it shrank under us
        raise FileShrank(f"file ended {body.length} bytes before its length")
    body.offset += sent
    body.length -= sent
    return sent


def read(body: FileBody, size: int) -> bytes:
    """The next `size` bytes of `body` (fewer only at its end); `body` moves past them."""
    data = os.pread(body.fd, size, body.offset)
    if not data:
        raise FileShrank(f"file ended {body.length} bytes before its length")
    body.offset += len(data)
    body.length -= len(data)
    return data
