#!/usr/bin/env python3
"""HTTP/2 benchmark: h2load through Porch vs nginx (`http2`) in front of the same origin.

    .venv/bin/python bench/h2.py                  # 3 rounds of 10 s, small and 1 MiB, ~3 minutes
    .venv/bin/python bench/h2.py --rounds 5 --duration 15 --payloads small
    .venv/bin/python bench/h2.py --profile 15      # py-spy of Porch under the /small load
    .venv/bin/python bench/h2.py --http2-engine h2 # Porch on the pure-Python h2 engine

Same method as bench/run.py and bench/tls.py (whose helpers it imports): the origin
nginx and the load generator on CPU 1, the proxy under test pinned to CPU 0, 3 s of
warm-up per target and payload, interleaved rounds whose order rotates, medians.
Both proxies terminate TLS with the same certificate (bench/tls.py's, ECDSA P-256),
offer ALPN h2, keep upstream connections alive (nginx `keepalive 64`) and log every
request to a file.  nginx: `worker_processes 1`, `listen ... ssl http2` (nginx before
1.25.1; `http2 on;` after).  Porch: `workers = 1`.

The load is h2load (Debian nghttp2-client) with `-c 10 -m 10` by default: 10
connections, 10 streams in flight on each, for `--duration` seconds (`-D`), once for
the ~100-byte `/small` and once for the 1 MiB `/1m` response.  Latency percentiles
come from h2load's per-request log (`--log-file`); "CPU µs/req" is the proxy's CPU
time over the requests it served.  Raw outputs go to bench/out/h2-<timestamp>/.
Run it with the venv's Python (it needs cryptography and porch).  Needs nginx, h2load.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as base  # noqa: E402  (bench/run.py: processes, origin, CPU accounting)
import tls  # noqa: E402  (bench/tls.py: certificate, TLS configs of both proxies)

SIZES = {"small": len(base.SMALL_BODY), "1m": base.LARGE_SIZE}


def nginx_version() -> tuple[int, ...]:
    text = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    return tuple(map(int, m.groups())) if m else (0, 0, 0)


def nginx_h2_conf(d: Path, port: int, origin: int, cert: Path, key: Path) -> str:
    """bench/tls.py's nginx TLS proxy config with HTTP/2 on the listener."""
    conf = tls.nginx_tls_conf(d, port, origin, cert, key)
    listen = f"listen 127.0.0.1:{port} ssl backlog=4096;"
    assert listen in conf
    if nginx_version() >= (1, 25, 1):
        return conf.replace(listen, listen + "\n        http2 on;")
    return conf.replace(listen, f"listen 127.0.0.1:{port} ssl http2 backlog=4096;")


def parse_h2load(text: str) -> dict:
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if not m:
        raise RuntimeError(f"h2load printed no summary:\n{text[-3000:]}")
    total, done, ok, failed, errored, timeout = map(int, m.groups())
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    data = re.search(r"traffic: .*?, .*? \((\d+)\) data", text)
    proto = re.search(r"Application protocol: (\S+)", text)
    return {"requests": done, "succeeded": ok, "failed": failed, "errored": errored,
            "timeout": timeout, "2xx": int(codes.group(1)) if codes else 0,
            "data_bytes": int(data.group(1)) if data else 0,
            "protocol": proto.group(1) if proto else None}


def percentiles(log_file: Path) -> dict:
    """p50/p99 (µs) from h2load's --log-file: start µs, status, duration µs per request."""
    durations = []
    for line in log_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] != "-1":
            durations.append(int(parts[2]))
    durations.sort()
    if not durations:
        return {"p50": 0, "p99": 0, "logged": 0}
    return {"p50": durations[len(durations) // 2],
            "p99": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
            "logged": len(durations)}


def run_h2load(args, procs: base.Procs, port: int, server, payload: str, duration: float,
               out_file: Path, *, requests: int | None = None) -> dict:
    """h2load on CPU 1 against https://127.0.0.1:PORT/PAYLOAD: counts, req/s, percentiles,
    the proxy's CPU."""
    url = f"https://127.0.0.1:{port}{base.PAYLOADS[payload]}"
    log_file = out_file.with_suffix(".log")
    load = ["-n", str(requests)] if requests else ["-D", str(duration)]
    argv = ["h2load", "-c", str(args.connections), "-m", str(args.streams), "-t", "1",
            *load, f"--log-file={log_file}", url]
    c0, s0, t0 = base.cpu_times(), base.tree_cpu_seconds(server.pid), time.monotonic()
    p = procs.start("h2load", argv, base.LOAD_CPU, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = p.communicate()[0].decode(errors="replace")
    c1, s1, t1 = base.cpu_times(), base.tree_cpu_seconds(server.pid), time.monotonic()
    procs.procs = [(n, q) for n, q in procs.procs if q is not p]
    out_file.write_text(f"$ taskset -c {base.LOAD_CPU} {' '.join(argv)}\n{text}")
    r = parse_h2load(text)
    if p.returncode != 0 or r["protocol"] != "h2":
        raise RuntimeError(f"h2load failed on {url} (exit {p.returncode}):\n{text[-3000:]}")
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    secs = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    r.update(percentiles(log_file))
    log_file.unlink()  # 100k+ lines per run; the percentiles are kept
    r.update(rps=r["requests"] / secs, mibps=r["data_bytes"] / secs / (1 << 20),
             errors=r["failed"] + r["errored"] + r["timeout"],
             server_cpu=100.0 * (s1[0] + s1[1] - s0[0] - s0[1]) / (t1 - t0),
             cpu1=base.cpu_busy(c0, c1, base.LOAD_CPU))
    r["cpu_us_per_req"] = r["server_cpu"] / 100 * (t1 - t0) / max(1, r["requests"]) * 1e6
    return r


def check(args, procs, port: int, server, out: Path, name: str) -> None:
    """Both payloads over h2, complete: 20 requests each, every byte there."""
    for payload, size in SIZES.items():
        r = run_h2load(args, procs, port, server, payload, 0, out / f"check-{payload}-{name}.txt",
                       requests=20)
        if r["2xx"] != 20 or r["data_bytes"] != 20 * size:
            raise RuntimeError(f"{name} {payload}: {r['2xx']} of 20 2xx, {r['data_bytes']} data bytes "
                               f"(expected {20 * size})")


def start_porch(args, procs, setup: base.Setup, cert: Path, key: Path, out: Path):
    d = setup.tmp / "porch"
    (d / "state").mkdir(parents=True)
    port = base.free_port()
    conf = d / "porch.toml"
    text = tls.porch_tls_conf(d, base.free_port(), port, setup.ports["direct"], cert, key)
    # which HTTP/2 engine serves (server/h2engine.py)
    conf.write_text(text.replace("[porch]\n", f'[porch]\nhttp2_engine = "{args.http2_engine}"\n', 1))
    shutil.copy(conf, out / "porch.toml")
    p = procs.start("porch", [args.porch, "run", "-c", str(conf)], base.PROXY_CPU,
                    stdout=open(d / "stdout.log", "wb"), stderr=subprocess.STDOUT)
    tls.wait_https(p, port, "Porch")
    return p, port


def start_nginx(procs, setup: base.Setup, cert: Path, key: Path):
    d = setup.tmp / "nginx"
    d.mkdir()
    port = base.free_port()
    p = setup._nginx("nginx", nginx_h2_conf(d, port, setup.ports["direct"], cert, key))
    tls.wait_https(p, port, "nginx")
    return p, port


def summary_table(args, results: dict, names: list[str]) -> tuple[str, dict]:
    lines = [f"h2load -c {args.connections} -m {args.streams} -t 1 -D {args.duration}; {args.rounds} rounds, "
             f"medians; proxy on CPU {base.PROXY_CPU}, h2load+origin on CPU {base.LOAD_CPU}", "",
             "| response | Porch req/s | nginx req/s | Porch / nginx | Porch p50 ms | nginx p50 ms | Porch p99 ms"
             " | nginx p99 ms | p99 Porch / nginx | Porch CPU µs/req | nginx CPU µs/req | MiB/s Porch / nginx"
             " | errors | req/s per round (Porch; nginx) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    summary: dict = {}
    for payload, by_target in results.items():
        med = {t: {k: statistics.median(r[k] for r in by_target[t])
                   for k in ("rps", "p50", "p99", "cpu_us_per_req", "mibps")} for t in names}
        errs = sum(r["errors"] for t in names for r in by_target[t])
        rounds = "; ".join(" / ".join(f"{r['rps']:,.0f}" for r in by_target[t]) for t in names)
        ratio = med["porch"]["rps"] / med["nginx"]["rps"]
        p99_ratio = med["porch"]["p99"] / max(1, med["nginx"]["p99"])
        summary[payload] = {"median": med, "rps_ratio": ratio, "p99_ratio": p99_ratio, "errors": errs}
        label = "`/small` (100 B)" if payload == "small" else "`/1m` (1 MiB)"
        lines.append(
            f"| {label} | {med['porch']['rps']:,.0f} | {med['nginx']['rps']:,.0f} | **{ratio:.2f}** |"
            f" {base.fmt_ms(med['porch']['p50'])} | {base.fmt_ms(med['nginx']['p50'])} |"
            f" {base.fmt_ms(med['porch']['p99'])} | {base.fmt_ms(med['nginx']['p99'])} | {p99_ratio:.2f} |"
            f" {med['porch']['cpu_us_per_req']:.0f} | {med['nginx']['cpu_us_per_req']:.0f} |"
            f" {med['porch']['mibps']:,.0f} / {med['nginx']['mibps']:,.0f} | {errs} | {rounds} |")
    return "\n".join(lines) + "\n", summary


def profile(args, procs: base.Procs, porch, out: Path) -> None:
    """py-spy (raw stacks, native frames) on Porch while h2load runs /small; the
    summary tables of bench/run.py's --profile."""
    proc, port = porch
    run_h2load(args, procs, port, proc, "small", 3, out / "profile-warmup.txt")
    raw = out / "profile.raw"
    spy = procs.start("py-spy", [args.py_spy, "record", "--native", "--subprocesses", "--rate", "100",
                                 "--duration", str(args.profile), "--format", "raw", "-o", str(raw),
                                 "--pid", str(proc.pid)],
                      base.LOAD_CPU, stdout=open(out / "py-spy.log", "wb"), stderr=subprocess.STDOUT)
    time.sleep(0.5)
    r = run_h2load(args, procs, port, proc, "small", args.profile + 2, out / "profile-h2load.txt")
    spy.wait(60)
    base.log(f"under py-spy: {r['rps']:,.0f} req/s, Porch CPU {r['server_cpu']:.0f}%")
    text, data = base.aggregate_raw(raw, 25)
    (out / "profile-top.txt").write_text(text)
    print("\n" + text)


def main(argv: list[str] | None = None, collect: dict | None = None) -> int:
    """With `collect` (bench/all.py), summary_table's medians go in collect["summary"]."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target and payload (3)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-c", "--connections", type=int, default=10, help="h2load clients (10)")
    ap.add_argument("-m", "--streams", type=int, default=10, help="streams in flight per connection (10)")
    ap.add_argument("--payloads", default="small,1m", help="comma list from small,1m (both)")
    ap.add_argument("--porch", default=str(base.REPO / ".venv" / "bin" / "porch"))
    ap.add_argument("--profile", type=int, metavar="SECONDS",
                    help="instead: py-spy Porch for SECONDS under the /small load, print where the time goes")
    ap.add_argument("--py-spy", default=str(base.REPO / ".venv" / "bin" / "py-spy"))
    ap.add_argument("--http2-engine", default="auto", choices=("auto", "nghttp2", "h2"),
                    help="Porch's [porch] http2_engine (auto: nghttp2 where built, else h2)")
    args = ap.parse_args(argv)
    payloads = [x.strip() for x in args.payloads.split(",") if x.strip()]
    for tool in ("nginx", "h2load", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install nginx nghttp2-client util-linux)", file=sys.stderr)
            return 2
    base.raise_nofile()
    args.targets, args.payloads = ["porch", "nginx"], payloads  # what base.Setup reads
    out = base.OUT_ROOT / f"h2-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    base.log(f"raw outputs in {out}")
    procs = base.Procs()
    setup = base.Setup(args, procs, out, keepalive_timeout=None, nginx_worker_connections=4096)
    try:
        setup.start_origin()
        cert, key = tls.make_cert(setup.tmp)
        servers = {"porch": start_porch(args, procs, setup, cert, key, out),
                   "nginx": start_nginx(procs, setup, cert, key)}
        base.log(f"Porch https 127.0.0.1:{servers['porch'][1]}, nginx https 127.0.0.1:{servers['nginx'][1]}")
        names = list(servers)
        for name, (proc, port) in servers.items():
            check(args, procs, port, proc, out, name)
        if args.profile:
            profile(args, procs, servers["porch"], out)
            return 0
        for payload in payloads:
            for name, (proc, port) in servers.items():
                base.log(f"warm-up {name} {base.PAYLOADS[payload]} {args.warmup}s")
                run_h2load(args, procs, port, proc, payload, args.warmup, out / f"warmup-{payload}-{name}.txt")
        results: dict = {p: {t: [] for t in names} for p in payloads}
        for rnd in range(1, args.rounds + 1):
            order = names[(rnd - 1) % 2:] + names[:(rnd - 1) % 2]
            for payload in payloads:
                for name in order:
                    proc, port = servers[name]
                    r = run_h2load(args, procs, port, proc, payload, args.duration,
                                   out / f"round{rnd}-{payload}-{name}.txt")
                    results[payload][name].append(r)
                    base.log(f"round {rnd} {payload:5} {name:5} {r['rps']:9,.0f} req/s  p50 "
                             f"{base.fmt_ms(r['p50'])} ms  p99 {base.fmt_ms(r['p99'])} ms  "
                             f"{r['mibps']:7.1f} MiB/s  err {r['errors']}  server CPU {r['server_cpu']:.0f}%  "
                             f"CPU1 {r['cpu1']:.0f}%")
        table, summary = summary_table(args, results, names)
        if collect is not None:
            collect["summary"] = summary
        (out / "summary.md").write_text(table)
        (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": results,
                                                       "summary": summary}, indent=1, default=str))
        print("\n" + table)
    finally:
        setup.collect_logs()
        procs.stop_all()
        setup.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
