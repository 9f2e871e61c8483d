"""A tiny upstream app for the demo: it answers every request with a page showing
the request line and the headers it received, so a newcomer sees what Porch adds
(X-Forwarded-*, X-Real-IP, X-Script-Name) and, by their absence, what it drops.

    python -m porch.demo_upstream --port 8081

Standard library only (http.server); not part of the proxy, and not fast.
"""

from __future__ import annotations

import argparse
import html
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Headers a reverse proxy sets; shown first and highlighted on the page.
_ADDED = ("x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-host",
          "x-forwarded-port", "x-forwarded-prefix", "x-script-name")  # fmt: skip

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Porch demo upstream</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 50em; padding: 0 1em; }}
pre {{ background: #f4f4f4; padding: .8em; overflow-x: auto; }}
td {{ font-family: monospace; padding: .1em .8em .1em 0; vertical-align: top; }}
tr.added td {{ background: #e6f4e6; font-weight: bold; }}
</style></head><body>
<h1>Porch demo upstream</h1>
<p>{verdict}</p>
<h2>Request line</h2>
<pre>{request_line}</pre>
<p>from {peer} (the address the upstream sees: Porch's, when it came through Porch)</p>
<h2>Headers received</h2>
<table>
{rows}
</table>
<p>Highlighted: headers a reverse proxy sets. Porch sets them for every request and drops
the ones a client sends itself (unless the client is in <code>trusted_proxies</code>).</p>
<h2>Try</h2>
<ul>
<li><a href="/">/</a>: this page through the catch-all site</li>
<li><a href="/app/hello?x=1">/app/hello?x=1</a>: a route with <code>strip_prefix</code>:
the upstream sees <code>/hello?x=1</code> and <code>X-Script-Name: /app</code></li>
<li><a href="/app">/app</a>: redirected to <code>/app/</code></li>
</ul>
</body></html>
"""


class DemoHandler(BaseHTTPRequestHandler):
    """Answers the usual methods with the page; reads and discards a request body."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real app behind a proxy would
    server_version = "porch-demo-upstream"
    # Headers and body go out in two writes: without TCP_NODELAY the second waits
    # for the proxy's delayed ACK (40 ms per request on a reused connection).
    disable_nagle_algorithm = True

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass  # the client went away: nothing to show

    def answer(self) -> None:
        self.discard_body()
        page = self.page().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = answer

    def discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit():
            self.rfile.read(int(length))
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                self.rfile.read(size + 2)
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass

    def page(self) -> str:
        if "X-Forwarded-For" in self.headers:  # case-insensitive, as header names are
            verdict = "This request came through a proxy: see the highlighted headers."
        else:
            verdict = ("This request came <b>directly</b>, not through Porch: "
                       "open the URL that <code>scripts/demo.sh</code> printed.")
        items = list(self.headers.items())
        items.sort(key=lambda item: item[0].lower() not in _ADDED)  # stable: added ones first
        rows = "\n".join(
            f'<tr{" class=added" if name.lower() in _ADDED else ""}>'
            f"<td>{html.escape(name)}:</td><td>{html.escape(value)}</td></tr>"
            for name, value in items
        )
        return _PAGE.format(
            verdict=verdict,
            request_line=html.escape(self.requestline),
            peer=html.escape(f"{self.client_address[0]}:{self.client_address[1]}"),
            rows=rows,
        )

    def log_message(self, format: str, *args: object) -> None:
        pass  # Porch's access log is the one the demo is about


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m porch.demo_upstream",
                                     description="The demo upstream: shows what it received.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081)")
    args = parser.parse_args(argv)
    try:
        server = ThreadingHTTPServer((args.host, args.port), DemoHandler)
    except OSError as err:
        print(f"demo upstream: cannot listen on {args.host}:{args.port}: {err.strerror}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"demo upstream listening on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
