#!/usr/bin/env python3
"""Policy benchmark: req/s of small responses through a route with basic auth, security
headers, a rate limit and compression on, Porch beside nginx configured the same.

    .venv/bin/python bench/policies.py                  # 3 rounds of 8 s per target, ~1 minute
    .venv/bin/python bench/policies.py --rounds 1 --duration 3     # a smoke check

Same method as bench/run.py (whose helpers it imports) and bench/compress.py: an
origin nginx and wrk on CPU 1, the proxy under test pinned to CPU 0, one worker each,
upstream connections kept alive, every request logged to a file, interleaved rounds
whose order rotates, medians.  The origin serves a 1 KB JSON file (compress.py's
records) with Content-Length: small, yet over both proxies' minimum length for
compression, so every response is compressed.  wrk sends the same two fields on
every request: `Authorization: Basic ...` and `Accept-Encoding: gzip`.

The route, as each proxy spells it:

| policy | Porch (porch.toml, on the route) | nginx (the location) |
|---|---|---|
| basic auth | `basic_auth = { htpasswd = ... }` | `auth_basic` + `auth_basic_user_file` |
| security headers | `security_headers = true` | three `add_header ... always` |
| rate limit | `rate_limit = { rate = "100000r/s", burst = 100000, nodelay = true }` | `limit_req_zone ... rate=100000r/s` + `limit_req ... burst=100000 nodelay` |
| compression | `compress = { level = 1, min_length = 256 }` (gzip) | `gzip on; gzip_comp_level 1; gzip_min_length 256; gzip_types application/json; gzip_proxied any; gzip_vary on` |

The password file holds one user whose hash is `{SHA}` by default (`htpasswd -s`):
nginx verifies it on every request (it has no cache), Porch once a minute (its cache
of successful checks), so both pay little.  `--hash bcrypt` (cost 5) shows what
nginx pays for a bcrypt check per request where Porch pays none once cached.  The
rate limit is high enough never to reject: both pay the lookup, neither rejects.
Before the load, each proxy is asked once without credentials (401 expected) and once
with them (200, gzip, the security headers, the body decoding to the file).

"CPU µs/req" is the proxy's CPU time (user + system, its process tree, from /proc)
over the requests wrk completed.  Raw outputs go to bench/out/policies-<timestamp>/.
Needs nginx, wrk and htpasswd (Debian: nginx, wrk, apache2-utils).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compress as cz  # noqa: E402  (bench/compress.py: the JSON records, the origin, decode)
import run as base  # noqa: E402  (bench/run.py: processes, CPU accounting, nginx temp paths)

USER, PASSWORD = "bench", "porch bench password"
PATH = "/data.json"
SECURITY = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "SAMEORIGIN"),
            ("Referrer-Policy", "strict-origin-when-cross-origin"))
TARGET = 0.6  # issue 13: at least 0.6x nginx's req/s


def nginx_conf(d: Path, port: int, origin: int) -> str:
    headers = "".join(f'\n            add_header {k} "{v}" always;' for k, v in SECURITY)
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
    gzip_comp_level 1;
    gzip_min_length 256;
    gzip_types application/json;
    gzip_proxied any;
    gzip_vary on;
    limit_req_zone $binary_remote_addr zone=bench:1m rate=100000r/s;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location = /small {{  # the readiness check (bench/run.py wait_ready), without policies
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location / {{
            auth_basic "bench";
            auth_basic_user_file {d}/htpasswd;
            limit_req zone=bench burst=100000 nodelay;{headers}
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def porch_conf(d: Path, port: int, origin: int) -> str:
    return f"""[porch]
http_port = {port}
bind = ["127.0.0.1"]
access_log = "{d}/access.log"
error_log = "{d}/error.log"
state_dir = "{d}/state"
workers = 1

[[site]]
  [[site.route]]
  path = "/small"  # the readiness check (bench/run.py wait_ready), without policies
  proxy = "http://127.0.0.1:{origin}"
  [[site.route]]
  path = "/"
  proxy = "http://127.0.0.1:{origin}"
  basic_auth = {{ htpasswd = "{d}/htpasswd", realm = "bench" }}
  security_headers = true
  rate_limit = {{ rate = "100000r/s", burst = 100000, nodelay = true }}
  compress = {{ algorithms = ["gzip"], level = 1, min_length = 256 }}
"""


def write_htpasswd(path: Path, scheme: str) -> None:
    flag = "-s" if scheme == "sha" else "-B"
    cost = [] if scheme == "sha" else ["-C", "5"]
    line = subprocess.run(["htpasswd", "-nb", flag, *cost, USER, PASSWORD], check=True,
                          capture_output=True, text=True).stdout.strip()
    path.write_text(line + "\n")
    path.chmod(0o644)  # nginx's workers run as nobody when started by root


def verify(ports: dict[str, int], content: bytes, authorization: str, out: Path) -> None:
    import http.client
    lines = []
    for target in ("porch", "nginx"):
        c = http.client.HTTPConnection("127.0.0.1", ports[target], timeout=10)
        c.request("GET", PATH)
        r = c.getresponse()
        r.read()
        if r.status != 401:
            raise RuntimeError(f"{target}: HTTP {r.status} without credentials, not 401")
        c.request("GET", PATH, headers={"Authorization": authorization, "Accept-Encoding": "gzip"})
        r = c.getresponse()
        data = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        missing = [k for k, v in SECURITY if headers.get(k.lower()) != v]
        coding = headers.get("content-encoding")
        if r.status != 200 or coding != "gzip" or missing or cz.decode(coding, data) != content:
            raise RuntimeError(f"{target}: HTTP {r.status}, Content-Encoding {coding}, missing {missing},"
                               f" or a body that does not decode to the file")
        lines.append(f"{target}: 401 without credentials; 200, gzip ({len(data)} of {len(content)} bytes),"
                     f" the three security headers")
    (out / "verify.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        base.log(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds of wrk per target and round")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--hash", choices=("sha", "bcrypt"), default="sha", help="the htpasswd entry's scheme")
    ap.add_argument("--porch", default=str(base.REPO / ".venv" / "bin" / "porch"))
    args = ap.parse_args(argv)
    for tool in ("nginx", "wrk", "htpasswd"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (Debian packages nginx, wrk, apache2-utils)", file=sys.stderr)
            return 2
    out = base.OUT_ROOT / f"policies-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    procs = base.Procs()
    setup = base.Setup(args, procs, out, keepalive_timeout=None, nginx_worker_connections=1024)
    authorization = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    try:
        content = cz.json_body(1000)
        d = setup.tmp / "origin"
        (d / "www").mkdir(parents=True)
        (d / "www" / "data.json").write_bytes(content)
        ports = {"origin": base.free_port(), "nginx": base.free_port(), "porch": base.free_port()}
        origin = setup._nginx("origin", cz.origin_conf(d, ports["origin"]))
        base.wait_ready(origin, ports["origin"], "origin", [d / "error.log"])
        nd, pd = setup.tmp / "nginx", setup.tmp / "porch"
        nd.mkdir()
        (pd / "state").mkdir(parents=True)
        write_htpasswd(nd / "htpasswd", args.hash)
        shutil.copy(nd / "htpasswd", pd / "htpasswd")
        servers = {"nginx": setup._nginx("nginx", nginx_conf(nd, ports["nginx"], ports["origin"]))}
        base.wait_ready(servers["nginx"], ports["nginx"], "nginx", [nd / "error.log"])
        (pd / "porch.toml").write_text(porch_conf(pd, ports["porch"], ports["origin"]))
        shutil.copy(pd / "porch.toml", out / "porch.toml")
        servers["porch"] = procs.start("porch", [args.porch, "run", "-c", str(pd / "porch.toml")], base.PROXY_CPU,
                                       stdout=open(pd / "stdout.log", "wb"), stderr=subprocess.STDOUT)
        base.wait_ready(servers["porch"], ports["porch"], "Porch", [pd / "stdout.log", pd / "error.log"], timeout=20)
        verify(ports, content, authorization, out)
        targets = ["porch", "nginx"]
        wrk_args = argparse.Namespace(**{**vars(args), "duration": 2})
        for target in targets:  # warm-up
            wrk(wrk_args, procs, ports[target], servers[target], authorization, out / "warmup.txt")
        results: dict[str, list[dict]] = {}
        for rnd in range(args.rounds):
            for target in targets[rnd % 2:] + targets[:rnd % 2]:
                r = wrk(args, procs, ports[target], servers[target], authorization, out / f"r{rnd}-{target}.txt")
                results.setdefault(target, []).append(r)
                base.log(f"round {rnd + 1} {target:5} {r['rps']:8,.0f} req/s  {r['cpu_us']:6.0f} µs CPU/req"
                         f"  (proxy CPU {r['server_cpu']:.0f}%)")
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        summary = (f"policies bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(content)} B JSON,"
                   f" htpasswd {args.hash}, medians of {args.rounds} rounds x {args.duration} s,"
                   f" wrk -c {args.connections}; load average at the end {load}\n\n{table(results)}\n")
        (out / "summary.md").write_text(summary)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(summary)
        return 0
    finally:
        procs.stop_all()
        setup.cleanup()


def wrk(args, procs: base.Procs, port: int, server, authorization: str, out_file: Path) -> dict:
    """One wrk run with the route's two request fields; req/s and the proxy's CPU per
    request (base.tree_cpu_seconds, as compress.py)."""
    argv = ["wrk", "-c", str(args.connections), "-t", "1", "-d", f"{args.duration}s",
            "-H", f"Authorization: {authorization}", "-H", "Accept-Encoding: gzip",
            f"http://127.0.0.1:{port}{PATH}"]
    s0, t0 = base.tree_cpu_seconds(server.pid), time.monotonic()
    p = procs.start("wrk", argv, base.LOAD_CPU, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = p.communicate()[0].decode(errors="replace")
    s1, t1 = base.tree_cpu_seconds(server.pid), time.monotonic()
    procs.procs = [(n, q) for n, q in procs.procs if q is not p]
    out_file.write_text(f"$ taskset -c {base.LOAD_CPU} {' '.join(argv[:6])} -H 'Authorization: ...' {' '.join(argv[8:])}\n{text}")
    done = re.search(r"(\d+) requests in", text)
    if p.returncode != 0 or done is None or "Non-2xx" in text:  # a 401 or a 429 would show here
        raise RuntimeError(f"wrk failed against port {port}:\n{text[-2000:]}")
    requests = int(done.group(1))
    cpu = s1[0] + s1[1] - s0[0] - s0[1]
    return {"requests": requests, "rps": requests / (t1 - t0), "cpu_us": cpu / max(1, requests) * 1e6,
            "server_cpu": 100.0 * cpu / (t1 - t0)}


def table(results: dict[str, list[dict]]) -> str:
    med = {t: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for t, runs in results.items()}
    p, n = med["porch"], med["nginx"]
    ratio = p["rps"] / n["rps"]
    return "\n".join([
        "| target | req/s | CPU µs/req | proxy CPU % |", "|---|---:|---:|---:|",
        f"| Porch | {p['rps']:,.0f} | {p['cpu_us']:.0f} | {p['server_cpu']:.0f} |",
        f"| nginx | {n['rps']:,.0f} | {n['cpu_us']:.0f} | {n['server_cpu']:.0f} |",
        f"\nPorch / nginx req/s: **{ratio:.2f}x** (target >= {TARGET}x:"
        f" {'met' if ratio >= TARGET else 'NOT met'})"])


if __name__ == "__main__":
    sys.exit(main())
