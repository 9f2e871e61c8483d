#!/usr/bin/env python3
"""Passthrough benchmark: Porch's [[stream]] vs sslh 1.20 (fork and select) vs nginx
`stream { ssl_preread on; }`, forwarding the same TLS-looking bytes to the same target.

    .venv/bin/python bench/passthrough.py                  # 1 GiB each way, short connections
    .venv/bin/python bench/passthrough.py --size-mib 256 --duration 5

Every proxy listens on 127.0.0.1 and routes a connection by its TLS ClientHello to one
TCP target (started here, its own process): Porch with `[[stream]] sni = ["bench.test"]`
beside its own HTTPS site (server/mux.py reads the hello, then server/splice.py copies
bytes), sslh with `--tls`, nginx with `ssl_preread on` and a fixed `proxy_pass`.  The
client sends one real ClientHello (made once by Python's ssl for SNI bench.test, the
same bytes for every proxy) and then its own framing: the target needs no TLS, so the
figures are the proxies' copying, not the endpoints' crypto.

- "bulk": one connection moves --size-mib MiB client -> target ("up"), then another
  target -> client ("down"); MB/s, and the proxy's CPU seconds per GiB (utime+stime of
  the proxy's processes, reaped children included, from /proc/PID/stat);
- "short": --clients connections in parallel, each: connect, hello + 16 bytes, a 16-byte
  answer, close; connections/s over --duration seconds (at most --max-conns in all).

The proxy runs on CPU 0 (taskset), the client and the target on CPU 1, as in
bench/run.py (whose process helpers it imports).  "direct" is the client straight at the
target: the ceiling of this client and target.  Needs nginx, sslh (Debian `sslh`:
`sslh`, the forking one, and `sslh-select`) and `.venv/bin/porch`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as base  # noqa: E402  (bench/run.py: processes, CPU accounting, free ports)
import tls as tls_bench  # noqa: E402  (bench/tls.py: Porch's TLS config)

SNI = "bench.test"
CHUNK = 1 << 20
HEADER = struct.Struct("!cQ")  # b"U" (client sends n bytes) or b"D" (target sends n), n
SHORT_BYTES = 16
TARGETS = ("direct", "porch", "sslh-fork", "sslh-select", "nginx")


def client_hello() -> bytes:
    """One TLS ClientHello record for SNI bench.test, as Python's ssl writes it."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=SNI)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


# --------------------------------------------------------------------------- the target


async def read_record(reader: asyncio.StreamReader) -> None:
    """Skip one TLS record (the ClientHello the proxies routed by)."""
    head = await reader.readexactly(5)
    await reader.readexactly(int.from_bytes(head[3:5], "big"))


async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await read_record(reader)
        kind, n = HEADER.unpack(await reader.readexactly(HEADER.size))
        if kind == b"U":
            left = n
            while left:
                data = await reader.read(min(left, CHUNK))
                if not data:
                    return
                left -= len(data)
            writer.write(b"done %d\n" % n)
        else:
            block = memoryview(b"\x00" * CHUNK)
            left = n
            while left:
                writer.write(block[:min(left, CHUNK)])
                left -= min(left, CHUNK)
                await writer.drain()
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def run_target(port: int) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        server = await asyncio.start_server(serve_one, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --------------------------------------------------------------------------- the client


def bulk(port: int, hello: bytes, kind: bytes, size: int, timeout: float) -> float:
    """Seconds to move `size` bytes one way through `port` (connect to last byte)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(hello + HEADER.pack(kind, size))
        if kind == b"U":
            block = memoryview(b"\x00" * CHUNK)
            left = size
            while left:
                s.sendall(block[:min(left, CHUNK)])
                left -= min(left, CHUNK)
            answer = s.recv(64)
            if answer != b"done %d\n" % size:
                raise RuntimeError(f"target answered {answer!r} after {size} bytes up")
        else:
            buf = bytearray(CHUNK)
            left = size
            while left:
                got = s.recv_into(buf, min(left, CHUNK))
                if not got:
                    raise RuntimeError(f"closed with {left} of {size} bytes still to come")
                left -= got
    return time.monotonic() - t0


async def short_conns(port: int, hello: bytes, clients: int, duration: float, max_conns: int) -> tuple[int, int, float]:
    """(completed, failed, seconds): connections of hello + 16 bytes up, 16 bytes down."""
    message = hello + HEADER.pack(b"D", SHORT_BYTES)
    done = failed = 0
    t0 = time.monotonic()
    deadline = t0 + duration

    async def worker() -> None:
        nonlocal done, failed
        while time.monotonic() < deadline and done + failed < max_conns:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                writer.write(message)
                await asyncio.wait_for(reader.readexactly(SHORT_BYTES), 5)
                writer.close()
                done += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                failed += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    return done, failed, time.monotonic() - t0


# --------------------------------------------------------------------------- the proxies


def proc_cpu(pid: int) -> float:
    """CPU seconds of pid and its live descendants, reaped children included (sslh-fork's
    per-connection processes end up in the parent's cutime/cstime)."""
    total = 0
    for p in base.tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (FileNotFoundError, IndexError):
            pass
    return total / base.CLK_TCK


def _nginx_configure() -> str:
    """`nginx -V`'s configure arguments (it prints them on stderr)."""
    import subprocess
    return subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr


# Debian builds nginx's stream module as a dynamic module (package libnginx-mod-stream).
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def nginx_conf(d: Path, port: int, target: int) -> str:
    if not NGINX_STREAM_MODULE.exists() and "--with-stream=dynamic" in _nginx_configure():
        raise SystemExit(f"nginx's stream module is not installed ({NGINX_STREAM_MODULE}): "
                         "apt-get install -y libnginx-mod-stream")
    load = f"load_module {NGINX_STREAM_MODULE};" if NGINX_STREAM_MODULE.exists() else ""
    return f"""# nginx as a passthrough proxy (ssl_preread), as sslh's alternative in the guides
{load}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {base.NOFILE};
events {{ worker_connections 4096; }}
stream {{
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        ssl_preread on;
        proxy_pass 127.0.0.1:{target};
    }}
}}
"""


def porch_conf(d: Path, port: int, target: int, cert: Path, key: Path) -> str:
    """bench/tls.py's Porch (one worker, a TLS site, logs in `d`) with the [[stream]]
    that takes the bench's hellos; its site is never reached (port 9)."""
    return tls_bench.porch_tls_conf(d, base.free_port(), port, 9, cert, key) + f"""
[[stream]]
sni = ["{SNI}"]
passthrough = "127.0.0.1:{target}"
"""


def wait_port(p: subprocess.Popen, port: int, name: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and p.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} not listening on {port} (exit code {p.poll()})")


def start_proxy(args, name: str, procs: base.Procs, d: Path, target: int, cert_key) -> tuple[subprocess.Popen, int]:
    d = d / name
    d.mkdir()
    port = base.free_port()
    log = open(d / "stdout.log", "wb")
    if name == "porch":
        (d / "state").mkdir()
        (d / "porch.toml").write_text(porch_conf(d, port, target, *cert_key))
        argv = [args.porch, "run", "-c", str(d / "porch.toml")]
    elif name == "nginx":
        (d / "nginx.conf").write_text(nginx_conf(d, port, target))
        argv = ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)]
    else:  # sslh 1.20: -f foreground, -n numeric; the forking one is plain `sslh`
        binary = "sslh" if name == "sslh-fork" else "sslh-select"
        argv = [shutil.which(binary) or f"/usr/sbin/{binary}", "-f", "-n",
                "-p", f"127.0.0.1:{port}", "--tls", f"127.0.0.1:{target}"]
    p = procs.start(name, argv, base.PROXY_CPU, stdout=log, stderr=subprocess.STDOUT)
    wait_port(p, port, name)
    return p, port


# --------------------------------------------------------------------------- main


def measure(args, name: str, port: int, pid: int | None, hello: bytes) -> dict:
    size = args.size_mib << 20
    r: dict = {}
    for kind, label in ((b"U", "up"), (b"D", "down")):
        c0 = proc_cpu(pid) if pid else 0.0
        secs = bulk(port, hello, kind, size, args.timeout)
        c1 = proc_cpu(pid) if pid else 0.0
        r[f"{label}_mbs"] = size / secs / 1e6
        r[f"{label}_cpu_per_gib"] = (c1 - c0) * (1 << 30) / size
    c0 = proc_cpu(pid) if pid else 0.0
    done, failed, secs = asyncio.run(short_conns(port, hello, args.clients, args.duration, args.max_conns))
    c1 = proc_cpu(pid) if pid else 0.0
    r.update(conns_s=done / secs, failed=failed, short_cpu_ms=1000 * (c1 - c0) / max(1, done))
    base.log(f"{name}: up {r['up_mbs']:.0f} MB/s ({r['up_cpu_per_gib']:.2f} CPU s/GiB), "
             f"down {r['down_mbs']:.0f} MB/s ({r['down_cpu_per_gib']:.2f} CPU s/GiB), "
             f"{r['conns_s']:.0f} conn/s ({failed} failed, {r['short_cpu_ms']:.3f} CPU ms/conn)")
    return r


def table(results: dict[str, dict]) -> str:
    rows = ["| proxy | up MB/s | up CPU s/GiB | down MB/s | down CPU s/GiB | short conn/s | CPU ms/conn | failed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['up_mbs']:.0f} | {r['up_cpu_per_gib']:.2f} | {r['down_mbs']:.0f} | "
                    f"{r['down_cpu_per_gib']:.2f} | {r['conns_s']:.0f} | {r['short_cpu_ms']:.3f} | {r['failed']} |")
    if "porch" in results:
        p = results["porch"]
        rows += ["", "| Porch / ... | up MB/s | up CPU/GiB | down MB/s | down CPU/GiB | conn/s | CPU/conn |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for other in ("sslh-fork", "sslh-select", "nginx"):
            if other not in results:
                continue
            o = results[other]
            cells = [p[k] / o[k] if o[k] else float("nan") for k in
                     ("up_mbs", "up_cpu_per_gib", "down_mbs", "down_cpu_per_gib", "conns_s", "short_cpu_ms")]
            rows.append(f"| Porch / {other} | " + " | ".join(f"{c:.2f}x" for c in cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None, collect: dict | None = None) -> int:
    """With `collect` (bench/all.py), the figures per target go in collect["results"]."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="bytes per bulk transfer, each way")
    ap.add_argument("--clients", type=int, default=50, help="parallel short connections")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of short connections")
    ap.add_argument("--max-conns", type=int, default=200_000, help="short connections at most")
    ap.add_argument("--timeout", type=float, default=120.0, help="socket timeout of a bulk transfer")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--porch", default=str(base.REPO / ".venv" / "bin" / "porch"))
    ap.add_argument("--target-port", type=int, help=argparse.SUPPRESS)  # internal: be the target
    args = ap.parse_args(argv)
    if args.target_port:
        run_target(args.target_port)
        return 0
    base.raise_nofile()
    procs = base.Procs()
    d = Path(tempfile.mkdtemp(prefix="porch-passthrough-"))
    results: dict[str, dict] = {}
    try:
        os.sched_setaffinity(0, {int(base.LOAD_CPU)})
        hello = client_hello()
        target_port = base.free_port()
        target = procs.start("target", [sys.executable, __file__, "--target-port", str(target_port)],
                             base.LOAD_CPU)
        wait_port(target, target_port, "target")
        cert_key = tls_bench.make_cert(d)  # a self-signed P-256 certificate for 127.0.0.1
        base.log(f"uptime: {os.getloadavg()}; hello {len(hello)} bytes; {args.size_mib} MiB each way")
        for name in args.targets.split(","):
            if name == "direct":
                results[name] = measure(args, name, target_port, None, hello)
                continue
            p, port = start_proxy(args, name, procs, d, target_port, cert_key)
            try:
                results[name] = measure(args, name, port, p.pid, hello)
            finally:
                procs.stop(p)
                procs.procs = [(n, q) for n, q in procs.procs if q is not p]
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)
    print()
    print(f"load average at the end: {os.getloadavg()}")
    print(table(results))
    if collect is not None:
        collect["results"] = results
    return 0


if __name__ == "__main__":
    sys.exit(main())
