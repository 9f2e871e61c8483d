#!/usr/bin/env python3
"""Every benchmark, Porch beside nginx, and one summary table of the ratios.

    .venv/bin/python bench/all.py            # ~15 minutes: 3 rounds of 10 s per figure
    .venv/bin/python bench/all.py --quick    # ~3 minutes: 1 round of 3 s, a smoke check
    .venv/bin/python bench/all.py --only h1,h2

It runs, in turn and each by calling the script's own main() (so the method is the one
each script documents: Porch and nginx in the same round, rounds interleaved, medians):

- `h1`: bench/run.py, HTTP/1.1 `/small` (100 B) and `/1m` (1 MiB), wrk;
- `tls`: bench/tls.py, TLS handshakes (Connection: close) and TLS keep-alive, wrk; full
  and resumed handshakes (TLS 1.3, 1.2), openssl s_time;
- `h2`: bench/h2.py, HTTP/2 over TLS, `/small` and `/1m`, h2load;
- `passthrough`: bench/passthrough.py, `[[stream]]` TLS passthrough against nginx's
  ssl_preread (bulk MB/s each way and short connections/s);
- `hotpath`: bench/hotpath.py, Porch's protocol objects without sockets (µs/request;
  no nginx figure: it is the figure the hot-path rules of HELPERS.md compare).

The summary gives per load Porch's and nginx's figure, the ratio Porch/nginx (higher is
better for Porch), each side's CPU µs per request where the script measures it, the
target of issue 16 and the load average when the load was measured (the machine is
shared: compare only figures of the same run).  It is printed and written to
bench/out/all-<timestamp>.md.  Run it with the venv's Python (tls, h2 and hotpath need
cryptography and porch).  Needs nginx, wrk, h2load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import importlib.util  # noqa: E402

# bench/ goes last on the path: its h2.py would otherwise shadow the h2 library that
# porch imports (hotpath); bench/h2.py itself is loaded under another name below.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
import run as base  # noqa: E402  (bench/run.py: HTTP/1.1 throughput, OUT_ROOT)


def bench_module(name: str):
    """bench/<name>.py as the module bench_<name>."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = path  # the scripts put bench/ first
    return mod

# Issue 16's targets: the ratio Porch/nginx a row should reach.
TARGETS = {"h1 small": 0.8, "h1 1 MiB": 1.25, "TLS handshakes": 0.8, "TLS keep-alive": 0.85,
           "h2 small": 0.5, "h2 1 MiB": 0.9}
SUITES = ("h1", "tls", "h2", "passthrough", "hotpath")


def load() -> str:
    return "%.1f %.1f %.1f" % os.getloadavg()


def row(name: str, porch: float, nginx: float, unit: str, porch_cpu: float | None = None,
        nginx_cpu: float | None = None, at: str = "") -> dict:
    return {"load": name, "porch": porch, "nginx": nginx, "unit": unit, "ratio": porch / nginx if nginx else 0.0,
            "porch_cpu": porch_cpu, "nginx_cpu": nginx_cpu, "uptime": at}


def per_req(s: dict) -> float:
    """CPU µs per request from bench/run.py's median server CPU % and req/s."""
    return s["server_cpu"] / 100 / s["rps"] * 1e6 if s["rps"] else 0.0


def bench_h1(quick: bool) -> list[dict]:
    got: dict = {}
    argv = ["--targets", "porch,nginx", "--payloads", "small,1m"]
    argv += ["--rounds", "1", "--duration", "3s", "--warmup", "1"] if quick else []
    at = load()
    if base.main(argv, got) != 0 or "summary" not in got:
        raise RuntimeError("bench/run.py failed")
    out = []
    for payload, name, unit in (("small", "h1 small", "req/s"), ("1m", "h1 1 MiB", "MiB/s")):
        p, n = got["summary"][payload]["porch"], got["summary"][payload]["nginx"]
        key = "rps" if payload == "small" else "mibps"
        out.append(row(name, p[key], n[key], unit, per_req(p), per_req(n), at))
    return out


def bench_tls(quick: bool) -> list[dict]:
    tls = bench_module("tls")

    got: dict = {}
    argv = ["--rounds", "1", "--duration", "3s", "--stime-seconds", "3"] if quick else []
    at = load()
    if tls.main(argv, got) != 0 or "summary" not in got:
        raise RuntimeError("bench/tls.py failed")
    out = []
    for key, name, unit in (("handshake", "TLS handshakes", "handshakes/s"), ("keepalive", "TLS keep-alive", "req/s"),
                            ("full", "TLS full (s_time)", "conn/s"), ("resumed 1.3", "TLS resumed 1.3", "conn/s"),
                            ("resumed 1.2", "TLS resumed 1.2", "conn/s")):
        p, n = got["summary"][key]["porch"], got["summary"][key]["nginx"]
        out.append(row(name, p["rps"], n["rps"], unit, p["cpu_us_per_req"], n["cpu_us_per_req"], at))
    return out


def bench_h2(quick: bool, engine: str) -> list[dict]:
    h2 = bench_module("h2")

    got: dict = {}
    argv = ["--http2-engine", engine]
    argv += ["--rounds", "1", "--duration", "3", "--warmup", "1"] if quick else []
    at = load()
    if h2.main(argv, got) != 0 or "summary" not in got:
        raise RuntimeError("bench/h2.py failed")
    out = []
    for payload, name in (("small", "h2 small"), ("1m", "h2 1 MiB")):
        med = got["summary"][payload]["median"]
        p, n = med["porch"], med["nginx"]
        out.append(row(name, p["rps"], n["rps"], "req/s", p["cpu_us_per_req"], n["cpu_us_per_req"], at))
    return out


def bench_passthrough(quick: bool) -> list[dict]:
    passthrough = bench_module("passthrough")

    got: dict = {}
    cpus = os.sched_getaffinity(0)
    argv = ["--targets", "porch,nginx"]
    argv += ["--size-mib", "256", "--duration", "3"] if quick else []
    at = load()
    try:
        if passthrough.main(argv, got) != 0 or "results" not in got:
            raise RuntimeError("bench/passthrough.py failed")
    finally:
        os.sched_setaffinity(0, cpus)  # passthrough.py pins itself to the load CPU
    p, n = got["results"]["porch"], got["results"]["nginx"]
    return [row("passthrough up", p["up_mbs"], n["up_mbs"], "MB/s", at=at),
            row("passthrough down", p["down_mbs"], n["down_mbs"], "MB/s", at=at),
            row("passthrough short conns", p["conns_s"], n["conns_s"], "conn/s",
                p["short_cpu_ms"] * 1000, n["short_cpu_ms"] * 1000, at)]


def bench_hotpath(quick: bool) -> list[dict]:
    hotpath = bench_module("hotpath")

    got: dict = {}
    at = load()
    if hotpath.main(["-n", "50000" if quick else "200000"], got) != 0:
        raise RuntimeError("bench/hotpath.py failed")
    us = got["us_per_req"]
    return [{"load": "hotpath (no sockets)", "porch": 1e6 / us, "nginx": None, "unit": "req/s", "ratio": None,
             "porch_cpu": us, "nginx_cpu": None, "uptime": at}]


def table(rows: list[dict]) -> str:
    lines = ["| load | Porch | nginx | unit | Porch / nginx | target | Porch CPU µs/req | nginx CPU µs/req"
             " | load average (1, 5, 15 min) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        goal = TARGETS.get(r["load"])
        ratio = "–" if r["ratio"] is None else f"**{r['ratio']:.2f}**"
        mark = "" if goal is None or r["ratio"] is None else (" (met)" if r["ratio"] >= goal else " (not met)")
        cells = [r["load"], f"{r['porch']:,.0f}", "–" if r["nginx"] is None else f"{r['nginx']:,.0f}", r["unit"],
                 ratio, "–" if goal is None else f"{goal}{mark}",
                 "–" if r["porch_cpu"] is None else f"{r['porch_cpu']:,.1f}",
                 "–" if r["nginx_cpu"] is None else f"{r['nginx_cpu']:,.1f}", r["uptime"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s per figure: a smoke check, not a figure")
    ap.add_argument("--only", default=",".join(SUITES), help=f"comma list from {','.join(SUITES)} (all)")
    ap.add_argument("--http2-engine", default="auto", choices=("auto", "nghttp2", "h2"))
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in only:
        if s not in SUITES:
            ap.error(f"unknown benchmark {s!r}: choose from {', '.join(SUITES)}")
    runs = {"h1": bench_h1, "tls": bench_tls, "h2": lambda q: bench_h2(q, args.http2_engine),
            "passthrough": bench_passthrough, "hotpath": bench_hotpath}
    rows: list[dict] = []
    failed: list[str] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for s in only:
        base.log(f"=== {s} (load average {load()})")
        try:
            rows += runs[s](args.quick)
        except (RuntimeError, KeyError, OSError) as exc:  # one broken benchmark must not hide the others
            base.log(f"{s} failed: {exc!r}")
            failed.append(s)
    text = (f"bench/all.py{' --quick' if args.quick else ''}, started {started}, "
            f"HTTP/2 engine {args.http2_engine}\n\n" + table(rows))
    if failed:
        text += f"\nfailed: {', '.join(failed)} (see the log above)\n"
    base.OUT_ROOT.mkdir(parents=True, exist_ok=True)
    path = base.OUT_ROOT / f"all-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(text)
    print("\n" + text)
    base.log(f"summary in {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
