"""An upstream whose every response is shaped by its query, and nginx as a reference proxy.

`Shaped` answers ``GET /anything?status=200&type=text/html&size=5000&framing=chunked
&h=ETag:"v1"&parts=2&gate=big`` (all optional):

- ``status`` (200), ``type`` (application/json; ``none``: no Content-Type), ``size``
  bytes of body (2000; k/M suffixes, 1024-based) made of JSON-ish lines that compress
  well and differ along the body (`body(size)`), ``h=Name:Value`` extra fields
  (repeatable), a Date always;
- ``framing``: ``length`` (Content-Length, the default), ``chunked``, or ``close``
  (until the close; also what an HTTP/1.0 request gets instead of chunked);
- ``parts``: the body written in that many pieces; with ``gate=NAME`` the server then
  waits after each piece but the last for the test's `release(NAME)` (and says it
  got there: `wait_gate(NAME)`), so a test can tell what a client got before the
  upstream sent the rest, without timing.

HEAD gets the head alone.  Each request is kept (`requests`: method, target, headers).
It runs in threads of the test process: the gates are plain `threading.Event`s.

`start_nginx(procs, workdir, server_block)`: Debian's nginx, one process (no master,
no daemon) on a free port, stopped by its pid with the test's other processes.
"""

from __future__ import annotations

import shutil
import socket
import threading
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .helpers import Registry, free_port, wait_for_port

REASONS = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
           302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect",
           308: "Permanent Redirect", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}


def body(size: int) -> bytes:
    """`size` bytes of lines like a JSON API's, each numbered (compressible, not uniform)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += b'{"id": %d, "name": "item %d", "tags": ["alpha", "beta"], "price": %d.%02d}\n' % (
            i, i * 7 % 1000, i % 97, i % 100)
        i += 1
    return bytes(out[:size])


def _size(text: str) -> int:
    factor = {"k": 1024, "M": 1024 * 1024}.get(text[-1:], 1)
    return int(text[:-1] if factor > 1 else text) * factor


class Shaped:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[tuple[str, str]]]] = []
        self._reached: dict[str, threading.Event] = {}
        self._released: dict[str, threading.Event] = {}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    # -- gates ------------------------------------------------------------------------

    def _event(self, table: dict[str, threading.Event], name: str) -> threading.Event:
        return table.setdefault(name, threading.Event())

    def wait_gate(self, name: str, timeout: float = 10.0) -> bool:
        """Whether the response under `name` got to its gate (its first parts sent)."""
        return self._event(self._reached, name).wait(timeout)

    def release(self, name: str) -> None:
        self._event(self._released, name).set()

    def close(self) -> None:
        for event in list(self._released.values()):
            event.set()
        self.listener.close()

    # -- serving ----------------------------------------------------------------------

    def _serve(self) -> None:
        with self.listener:
            while True:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, buf = buf.split(b"\r\n\r\n", 1)  # GETs and HEADs: no body
                    if not self._answer(conn, head.decode("latin-1")):
                        return
            except OSError:
                return

    def _answer(self, conn: socket.socket, head: str) -> bool:
        lines = head.split("\r\n")
        method, target, version = lines[0].split(" ")
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if ":" in line]
        self.requests.append((method, target, headers))
        q = parse_qs(urlsplit(target).query)
        arg = lambda name, default: q.get(name, [default])[0]  # noqa: E731
        status, framing = int(arg("status", "200")), arg("framing", "length")
        closing = any(k.lower() == "connection" and v.lower() == "close" for k, v in headers)
        if version == "HTTP/1.0":
            closing = True
            framing = "close" if framing == "chunked" else framing
        content = b"" if status in (204, 304) else body(_size(arg("size", "2000")))
        fields = [("Date", formatdate(usegmt=True))]
        if arg("type", "application/json") != "none":
            fields.append(("Content-Type", arg("type", "application/json")))
        fields += [tuple(x.strip() for x in item.split(":", 1)) for item in q.get("h", [])]
        if framing == "length" and status not in (204, 304):
            fields.append(("Content-Length", str(len(content))))
        elif framing == "chunked":
            fields.append(("Transfer-Encoding", "chunked"))
        if framing == "close" or closing:
            fields.append(("Connection", "close"))
        out = f"HTTP/1.1 {status} {REASONS.get(status, 'Other')}\r\n"
        out += "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
        conn.sendall(out.encode("latin-1"))
        if method != "HEAD" and content:
            self._body(conn, content, framing, int(arg("parts", "1")), arg("gate", ""))
        return not (framing == "close" or closing)

    def _body(self, conn: socket.socket, content: bytes, framing: str, parts: int, gate: str) -> None:
        step = -(-len(content) // parts)
        pieces = [content[i:i + step] for i in range(0, len(content), step)]
        for n, piece in enumerate(pieces):
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
            if gate and n < len(pieces) - 1:
                name = gate if len(pieces) == 2 else f"{gate}{n}"
                self._event(self._reached, name).set()
                if not self._event(self._released, name).wait(30):
                    return
        if framing == "chunked":
            conn.sendall(b"0\r\n\r\n")


# -- nginx as the reference ------------------------------------------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(procs: Registry, workdir: Path, server: str, http: str = "") -> int:
    """nginx with `server` (the body of one server block, which listens on the port
    returned) and `http` (more http-level directives)."""
    d = workdir / "nginx"
    d.mkdir(exist_ok=True)
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    {http}
    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
""")
    managed = procs.start([NGINX, "-p", f"{d}/", "-c", str(conf)], cwd=d, name="nginx")
    wait_for_port(port, managed, what="nginx")
    return port

