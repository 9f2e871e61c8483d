#!/usr/bin/env python3
"""Compression benchmark: CPU per request for a 100 KB JSON body, Porch vs nginx's gzip.

    .venv/bin/python bench/compress.py                 # 3 rounds of 8 s per case, ~4 minutes
    .venv/bin/python bench/compress.py --rounds 5 --duration 10

Same method as bench/run.py (whose helpers it imports): an origin nginx and wrk on CPU
1, the proxy under test pinned to CPU 0, interleaved rounds whose order rotates,
medians.  The origin serves one 100 KB JSON file (an API's list of records, made here,
the same bytes every run) with Content-Length.  Both proxies keep upstream connections
alive and log every request to a file; nginx: `worker_processes 1`, `gzip on;
gzip_types application/json; gzip_proxied any; gzip_comp_level N` per location;
Porch: `workers = 1`, `compress` per route with the same level.

Cases, each asked with wrk's `-H "Accept-Encoding: ..."`: identity (no compression:
the cost of proxying the body), gzip at level 1 (nginx's default) and 5 (Porch's
default) through both proxies, and Porch's br (level 4) and zstd (level 3) beside them
(Debian's nginx has neither).  "CPU µs/req" is the proxy's CPU time (user + system,
its whole process tree, from /proc) over the requests wrk completed; "coding µs/req"
subtracts the same proxy's identity figure, leaving what compressing cost.  Before
the load, every case is fetched once and its body decoded and compared with the file.
Raw outputs go to bench/out/compress-<timestamp>/.  Needs nginx and wrk.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as base  # noqa: E402  (bench/run.py: processes, CPU accounting, nginx temp paths)

LEVELS = (1, 5)
# (name, Accept-Encoding, path, targets)
CASES = [("identity", "identity", "/l5/data.json", ("porch", "nginx")),
         ("gzip 1", "gzip", "/l1/data.json", ("porch", "nginx")),
         ("gzip 5", "gzip", "/l5/data.json", ("porch", "nginx")),
         ("br 4", "br", "/l5/data.json", ("porch",)),
         ("zstd 3", "zstd", "/l5/data.json", ("porch",))]


def json_body(size: int = 100 * 1000) -> bytes:
    """~`size` bytes of an API's JSON answer: records with ids, names, mails, numbers."""
    rows, n = [], 0
    while sum(len(r) for r in rows) < size - 200:
        rows.append(json.dumps({"id": n, "user": f"user{n * 7919 % 10007}", "email": f"u{n}@example.org",
                                "active": n % 3 != 0, "score": round(n * 1.37 % 100, 2),
                                "tags": ["alpha", "beta", "gamma"][: n % 3 + 1]}))
        n += 1
    return ("[" + ",\n".join(rows) + "]\n").encode()


def origin_conf(d: Path, port: int) -> str:
    return f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{base.NGINX_TEMP.format(d=d)}
    types {{ application/json json; }}
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location = /small {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""


def nginx_conf(d: Path, port: int, origin: int) -> str:
    locations = "".join(f"""
        location /l{level}/ {{
            proxy_pass http://origin/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            gzip_comp_level {level};
        }}""" for level in LEVELS)
    return f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log combined;
{base.NGINX_TEMP.format(d=d)}
    keepalive_requests 100000000;
    gzip on;
    gzip_types application/json;
    gzip_proxied any;
    gzip_vary on;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location = /small {{ return 200 "ok\\n"; }}{locations}
    }}
}}
"""


def porch_conf(d: Path, port: int, origin: int) -> str:
    routes = "".join(f"""
  [[site.route]]
  path = "/l{level}/"
  strip_prefix = true
  compress = {{ level = {{ gzip = {level} }} }}
""" for level in LEVELS)
    return f"""[porch]
http_port = {port}
bind = ["127.0.0.1"]
access_log = "{d}/access.log"
error_log = "{d}/error.log"
state_dir = "{d}/state"
workers = 1

[[site]]
proxy = "http://127.0.0.1:{origin}"
{routes}"""


def fetch(port: int, path: str, accept: str) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Accept-Encoding": accept})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def decode(coding: str | None, data: bytes) -> bytes:
    if coding == "gzip":
        return zlib.decompress(data, 31)
    if coding == "br":
        import brotli
        return brotli.decompress(data)
    if coding == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def verify(ports: dict[str, int], content: bytes, out: Path) -> None:
    lines = []
    for name, accept, path, targets in CASES:
        for target in targets:
            status, headers, data = fetch(ports[target], path, accept)
            coding = headers.get("content-encoding")
            want = None if accept == "identity" else accept
            if status != 200 or coding != want or decode(coding, data) != content:
                raise RuntimeError(f"{target} {name}: HTTP {status}, Content-Encoding {coding}, "
                                   f"{len(data)} bytes that do not decode to the file")
            lines.append(f"{target} {name}: {len(data)} bytes on the wire ({len(data) / len(content):.1%})")
    (out / "verify.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        base.log(line)


def run_wrk(args, procs: base.Procs, port: int, server, case: tuple, out_file: Path) -> dict:
    name, accept, path, _ = case
    argv = ["wrk", "-c", str(args.connections), "-t", "1", "-d", f"{args.duration}s",
            "-H", f"Accept-Encoding: {accept}", f"http://127.0.0.1:{port}{path}"]
    s0, t0 = base.tree_cpu_seconds(server.pid), time.monotonic()
    p = procs.start("wrk", argv, base.LOAD_CPU, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = p.communicate()[0].decode(errors="replace")
    s1, t1 = base.tree_cpu_seconds(server.pid), time.monotonic()
    procs.procs = [(n, q) for n, q in procs.procs if q is not p]
    out_file.write_text(f"$ taskset -c {base.LOAD_CPU} {' '.join(argv)}\n{text}")
    done = re.search(r"(\d+) requests in", text)
    if p.returncode != 0 or done is None or "Non-2xx" in text:
        raise RuntimeError(f"wrk failed on {path} ({name}):\n{text[-2000:]}")
    requests = int(done.group(1))
    cpu = s1[0] + s1[1] - s0[0] - s0[1]
    return {"requests": requests, "rps": requests / (t1 - t0), "cpu_us": cpu / max(1, requests) * 1e6,
            "server_cpu": 100.0 * cpu / (t1 - t0)}


def table(results: dict) -> str:
    med = {key: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for key, runs in results.items()}
    lines = ["| case | Porch CPU µs/req | nginx CPU µs/req | Porch / nginx | Porch coding µs/req"
             " | nginx coding µs/req | coding Porch / nginx | Porch req/s | nginx req/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _, _, targets in CASES:
        p, n = med.get(("porch", name)), med.get(("nginx", name))
        pc = p["cpu_us"] - med[("porch", "identity")]["cpu_us"]
        row = f"| {name} | {p['cpu_us']:.0f} |"
        if n:
            nc = n["cpu_us"] - med[("nginx", "identity")]["cpu_us"]
            ratio = f"**{pc / nc:.2f}x**" if name != "identity" and nc > 0 else "-"
            row += (f" {n['cpu_us']:.0f} | {p['cpu_us'] / n['cpu_us']:.2f}x | {pc:.0f} |"
                    f" {nc:.0f} | {ratio} | {p['rps']:,.0f} | {n['rps']:,.0f} |")
        else:
            row += f" - | - | {pc:.0f} | - | - | {p['rps']:,.0f} | - |"
        lines.append(row)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds of wrk per case and round")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--porch", default=str(base.REPO / ".venv" / "bin" / "porch"))
    args = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (Debian package {tool})", file=sys.stderr)
            return 2
    out = base.OUT_ROOT / f"compress-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    procs = base.Procs()
    setup = base.Setup(args, procs, out, keepalive_timeout=None, nginx_worker_connections=1024)
    try:
        content = json_body()
        d = setup.tmp / "origin"
        (d / "www").mkdir(parents=True)
        (d / "www" / "data.json").write_bytes(content)
        ports = {"origin": base.free_port()}
        origin = setup._nginx("origin", origin_conf(d, ports["origin"]))
        base.wait_ready(origin, ports["origin"], "origin", [d / "error.log"])
        (setup.tmp / "nginx").mkdir()
        ports["nginx"] = base.free_port()
        servers = {"nginx": setup._nginx("nginx", nginx_conf(setup.tmp / "nginx", ports["nginx"], ports["origin"]))}
        base.wait_ready(servers["nginx"], ports["nginx"], "nginx", [setup.tmp / "nginx" / "error.log"])
        pd = setup.tmp / "porch"
        (pd / "state").mkdir(parents=True)
        ports["porch"] = base.free_port()
        (pd / "porch.toml").write_text(porch_conf(pd, ports["porch"], ports["origin"]))
        shutil.copy(pd / "porch.toml", out / "porch.toml")
        servers["porch"] = procs.start("porch", [args.porch, "run", "-c", str(pd / "porch.toml")], base.PROXY_CPU,
                                       stdout=open(pd / "stdout.log", "wb"), stderr=subprocess.STDOUT)
        base.wait_ready(servers["porch"], ports["porch"], "Porch", [pd / "stdout.log", pd / "error.log"], timeout=20)
        base.log(f"{len(content)} bytes of JSON; origin :{ports['origin']}, nginx :{ports['nginx']},"
                 f" Porch :{ports['porch']}")
        verify(ports, content, out)
        runs = [(target, case) for case in CASES for target in case[3]]
        for target, case in runs:  # warm-up
            args_short = argparse.Namespace(**{**vars(args), "duration": 2})
            run_wrk(args_short, procs, ports[target], servers[target], case, out / "warmup.txt")
        results: dict = {}
        for rnd in range(args.rounds):
            order = runs[rnd % len(runs):] + runs[:rnd % len(runs)]
            for target, case in order:
                r = run_wrk(args, procs, ports[target], servers[target], case,
                            out / f"r{rnd}-{target}-{case[0].replace(' ', '')}.txt")
                results.setdefault((target, case[0]), []).append(r)
                base.log(f"round {rnd + 1} {target:5} {case[0]:8} {r['rps']:8,.0f} req/s"
                         f"  {r['cpu_us']:6.0f} µs CPU/req  (proxy CPU {r['server_cpu']:.0f}%)")
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        summary = (f"compress bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(content)} B JSON,"
                   f" medians of {args.rounds} rounds x {args.duration} s, wrk -c {args.connections};"
                   f" load average at the end {' '.join(load)}\n\n{table(results)}\n")
        (out / "summary.md").write_text(summary)
        (out / "results.json").write_text(json.dumps({f"{t} {c}": r for (t, c), r in results.items()}, indent=1))
        print(summary)
        return 0
    finally:
        procs.stop_all()
        setup.cleanup()


if __name__ == "__main__":
    sys.exit(main())
