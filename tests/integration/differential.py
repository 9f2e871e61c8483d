"""Side-by-side tests' common part: one rendered config file served by a reference
server (Debian's nginx or apache2) and by `porch run -c FILE`, the same raw request
sent to both, and their answers compared (test_nginx_differential.py,
test_apache_differential.py and the tests that reuse them).

A file's text names PORT (each server's own), UPSTREAM (the echo upstream's
host:port) and whatever the caller's `render` replaces; the echo upstream answers with
what it received as JSON, so both sides' upstream requests can be compared too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin

from .helpers import PORCH_BIN, Managed, RawConn, Registry, Upstream, free_port, wait_for_port


@dataclass
class Pair:
    """The reference server and Porch serving one rendered file; the echo upstream behind both."""

    reference: int  # nginx's or apache2's port
    porch: int
    upstream: Upstream | None = None

    def ask(self, port: int, request: bytes) -> tuple[int, dict, dict | None]:
        """(status, the client's headers lowercased, what the upstream received or None)."""
        with RawConn(port) as conn:
            conn.send(request)
            resp = conn.read_response(head_request=request.startswith(b"HEAD "))
        headers = {k.lower(): v for k, v in resp.headers}
        seen = None
        if resp.header("content-type") == "application/json" and resp.body.startswith(b"{"):
            seen = resp.json()
        return resp.status, headers, seen


def serve(procs: Registry, tmp: Path, name: str, render: Callable[[int], str],
          reference: Callable[[Path, Path, int], list[str]], upstream: Upstream | None = None,
          prepare: Callable[[Path], None] | None = None) -> Pair:
    """Start `name` (the reference: `reference(dir, site file, port)` is its argv) and
    Porch, each in its own directory on its own port, on `render(port)`'s text."""
    ports = {}
    for who in (name, "porch"):
        d = tmp / who
        d.mkdir()
        if prepare is not None:
            prepare(d)
        ports[who] = port = free_port()
        site = d / "site.conf"
        site.write_text(render(port))
        # env(1) execs porch (same pid); PORCH_STATE_DIR: [porch] state_dir for these files
        argv = reference(d, site, port) if who == name else \
            ["env", f"PORCH_STATE_DIR={d / 'state'}", str(PORCH_BIN), "run", "-c", str(site)]
        managed: Managed = procs.start(argv, cwd=d, name=who)
        wait_for_port(port, managed)
    return Pair(ports[name], ports["porch"], upstream)


def req(method: str, target: str, host: str, extra: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT", "PROPFIND") else ""
    return (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}{length}Connection: close\r\n\r\n"
            .encode("latin-1") + body)


def compare(pair: Pair, request: bytes, *, name: str, compared: tuple[str, ...], porch_own: tuple[str, ...],
            skip: tuple[str, ...] = (), response: tuple[str, ...] = ()) -> None:
    """Ask both; assert the same answer (status, Location as the client resolves it, the
    `response` fields) and the same upstream view (method, target, body length, the
    `compared` fields: those the reference sent, and on Porch's side its own
    forwarding fields, `porch_own`, only where the reference sent them too)."""
    out = {}
    sent_by_reference: set[str] = set()
    head = request.split(b"\r\n\r\n")[0]
    target, host = head.split(b" ")[1].decode(), head.split(b"Host: ")[1].split(b"\r\n")[0].decode()
    for who, port in ((name, pair.reference), ("porch", pair.porch)):
        status, headers, seen = pair.ask(port, request)
        fields = None
        if seen is not None:
            got: dict[str, list[str]] = {}
            for k, v in seen["headers"]:
                k = k.lower()
                if k not in compared or k in skip or (who == "porch" and k in porch_own and k not in sent_by_reference):
                    continue
                got.setdefault(k, []).append(v.replace(str(port), "PORT"))
            sent_by_reference |= set(got) if who == name else set()
            fields = (seen["method"], seen["target"], got, seen["body_length"])
        location = headers.get("location")  # a relative one as the client resolves it (RFC 9110 10.2.2)
        location = urljoin(f"http://{host}:{port}{target}", location).replace(str(port), "PORT") if location else ""
        added = {k: headers.get(k) for k in response if k not in skip}
        out[who] = (status, location, added, fields)
    assert out["porch"] == out[name], f"{head!r}\n {name}: {out[name]}\n porch: {out['porch']}"
