"""Instructions Porch's worker spends per request over TLS, per kept-alive request and
per new connection (a full TLS 1.3 handshake), against the same over plain HTTP:
callgrind on the live worker, so every layer counts (uvloop, OpenSSL, the kernel's
share excepted).  Deterministic where wall-clock runs on this machine move by 10%.

    .venv/bin/python bench/tls_instructions.py                  # keep-alive and handshakes
    .venv/bin/python bench/tls_instructions.py --only keepalive
    PORCH_UVLOOP_TLS=1 .venv/bin/python bench/tls_instructions.py   # uvloop's SSLProtocol

Method: an origin (a few lines of asyncio, 100-byte answers) and `porch run` with one
worker under `valgrind --tool=callgrind --trace-children=yes`; a Python client warms
up, then `callgrind_control -z` zeroes the worker's counts, N requests run, and
`callgrind_control -d` dumps them.  Each load runs at N and 3N and the figure is the
difference over 2N (start-up and the dump itself cancel out).  "keepalive": `GET
/small` N times on one connection; "handshake": N connections of one request each
with `Connection: close` (wrk's handshake load); "plain": keep-alive over plain HTTP,
for the cost TLS adds.  Also printed: SSL_read_ex + SSL_write_ex (OpenSSL's records,
which nginx pays the same) and SSL_do_handshake, inclusive.

Needs valgrind (Debian `valgrind`); a run takes about two minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
PORCH = ROOT / ".venv" / "bin" / "porch"
sys.path.insert(0, str(HERE))
import run as base  # noqa: E402  (bench/run.py: free_port)
from tls import make_cert  # noqa: E402  (bench/tls.py: the benchmark's ECDSA P-256 certificate)

ORIGIN = """
import asyncio, sys
RESP = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 100\\r\\n\\r\\n" + b"x" * 100
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while b"\\r\\n\\r\\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\\r\\n\\r\\n")
            self.t.write(RESP)
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await s.serve_forever()
asyncio.run(main())
"""

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CLOSE = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def read_response(s) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before a response")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:80]!r}")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += s.recv(65536)


def keepalive(port: int, tls: bool):
    raw = socket.create_connection(("127.0.0.1", port))
    s = client_context().wrap_socket(raw) if tls else raw

    def one() -> None:
        s.sendall(REQUEST)
        read_response(s)
    return one


def handshakes(port: int):
    ctx = client_context()

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as s:
            s.sendall(CLOSE)
            read_response(s)
            while s.recv(65536):
                pass
    return one


def counts(path: Path) -> dict[str, int]:
    """Total and a few functions' inclusive instructions of one callgrind dump."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                         capture_output=True, text=True, check=True).stdout
    found = {"total": int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", out).group(1).replace(",", ""))}
    for name in ("SSL_read_ex", "SSL_write_ex", "SSL_do_handshake"):
        m = re.search(rf"^\s*([\d,]+) \([^)]*\)\s+\S*:{name} ", out, re.M)
        found[name] = int(m.group(1).replace(",", "")) if m else 0
    return found


def measure(worker: int, one, n: int, out: Path, label: str) -> dict[str, float]:
    for _ in range(20):
        one()
    time.sleep(0.3)
    got = []
    for count in (n, 3 * n):
        subprocess.run(["callgrind_control", "-z", str(worker)], capture_output=True, check=True)
        for _ in range(count):
            one()
        subprocess.run(["callgrind_control", "-d", f"{label}{count}", str(worker)], capture_output=True, check=True)
        time.sleep(0.5)
        dumps = sorted(out.glob(f"cg.{worker}.*"), key=lambda p: int(p.suffix[1:]))
        got.append(counts(dumps[-1]))
    return {k: (got[1][k] - got[0][k]) / (2 * n) for k in got[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="plain,keepalive,handshake")
    ap.add_argument("-n", type=int, default=200, help="requests of the small run (the large: 3n)")
    args = ap.parse_args(argv)
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="porch-tls-instr-"))
    cert, key = make_cert(out)
    origin_port, http_port, https_port = base.free_port(), base.free_port(), base.free_port()
    (out / "origin.py").write_text(ORIGIN)
    (out / "porch.toml").write_text(f"""[porch]
http_port = {http_port}
https_port = {https_port}
bind = ["127.0.0.1"]
workers = 1
state_dir = "{out / 'state'}"
access_log = "{out / 'access.log'}"
error_log = "{out / 'error.log'}"

[[site]]
hosts = ["127.0.0.1"]
proxy = "http://127.0.0.1:{origin_port}"
tls = {{ cert = "{cert}", key = "{key}" }}
redirect_http = false
""")
    procs = [subprocess.Popen([sys.executable, str(out / "origin.py"), str(origin_port)])]
    try:
        procs.append(subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/cg.%p",
             str(PORCH), "run", "-c", str(out / "porch.toml")],
            stdout=subprocess.DEVNULL, stderr=open(out / "valgrind.log", "w")))
        deadline = time.monotonic() + 120
        while True:
            try:
                keepalive(https_port, True)()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        worker = base.children(procs[1].pid)[0]  # valgrind runs porch in its own process
        loads = {"plain": lambda: keepalive(http_port, False), "keepalive": lambda: keepalive(https_port, True),
                 "handshake": lambda: handshakes(https_port)}
        tls_name = "uvloop's SSLProtocol" if os.environ.get("PORCH_UVLOOP_TLS") == "1" else "as built"
        print(f"TLS transport: {tls_name}; instructions per request, (3n minus n) / 2n, n = {args.n}")
        print("| load | instructions | SSL_read_ex + SSL_write_ex | SSL_do_handshake |")
        print("|---|---:|---:|---:|")
        for name in args.only.split(","):
            n = args.n if name != "handshake" else max(args.n // 2, 20)
            r = measure(worker, loads[name](), n, out, name)
            print(f"| {name} | {r['total']:,.0f} | {r['SSL_read_ex'] + r['SSL_write_ex']:,.0f} | "
                  f"{r['SSL_do_handshake']:,.0f} |", flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["pkill", "-f", f"porch run -c {out}/porch.toml"], check=False)
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
