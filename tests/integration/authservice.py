"""A small forward-auth service, as Authelia's /api/verify behaves, for the forward_auth
tests (tests/integration/test_forward_auth.py).  Run as a process:

    python authservice.py --port N --log FILE [--hang]

- Cookie `session=alice-ok`: 200, Remote-User: alice, Remote-Groups: admins,dev.
- No valid session, from a browser (Accept names text/html): 302 to the login page
  with the page it came from in `rd`, a Set-Cookie, and an HTML body.
- No valid session otherwise: 401 with WWW-Authenticate and a text body.
- `--hang`: reads the request and never answers.
Each request is appended to FILE as a JSON line (method, path, headers, the client
port: the same port twice is a reused keep-alive connection).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Authelia
    log_path = ""
    hang = False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        record = {"method": self.command, "path": self.path, "port": self.client_address[1],
                  "headers": [[k, v] for k, v in self.headers.items()]}
        with LOCK, open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.hang:
            time.sleep(3600)
            return
        cookie = self.headers.get("Cookie", "")
        if "session=alice-ok" in cookie:
            self._send(200, [("Remote-User", "alice"), ("Remote-Groups", "admins,dev")], b"")
        elif "text/html" in self.headers.get("Accept", ""):
            target = self.headers.get("X-Original-URL", "")
            self._send(302, [("Location", "https://auth.test/?rd=" + quote(target, safe="")),
                             ("Set-Cookie", "authelia_flow=started; Path=/; HttpOnly"),
                             ("Content-Type", "text/html; charset=utf-8")],
                       b'<a href="https://auth.test/">Found</a>\n')
        else:
            self._send(401, [("WWW-Authenticate", 'Basic realm="Authorization Required"'),
                             ("Content-Type", "text/plain; charset=utf-8")], b"401 Unauthorized\n")

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    Handler.log_path = args.log
    Handler.hang = args.hang
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
