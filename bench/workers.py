#!/usr/bin/env python3
"""Porch's scaling with worker processes: req/s and CPU per request, workers = 1 vs 2 (...).

    python3 bench/workers.py                 # workers 1 and 2, /small, 3 rounds of 10 s
    python3 bench/workers.py --workers 1,2 --rounds 5 -d 15s

One origin nginx and one Porch per worker count (each `porch run` with its own
`workers = N`), all in front of the same origin; wrk takes turns on them, round after
round, the order rotating.  Nothing is pinned: the point is how Porch uses the
machine's cores, and the load generator and the origin share those cores with it.
So besides req/s (which the shared cores cap) the table gives what scaling costs:
CPU seconds per request of Porch's processes (supervisor + workers, from
/proc/PID/stat), and how busy the whole machine was (/proc/stat).

Imports the harness pieces (processes, origin config, wrk's report script, /proc
readers) from bench/run.py.  Raw outputs: bench/out/workers-<time>/.  Standard
library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402  (bench/ is not a package)
    LUA,
    OUT_ROOT,
    PAYLOADS,
    REPO,
    Procs,
    cpu_times,
    free_port,
    log,
    origin_conf,
    porch_conf,
    tree,
    tree_cpu_seconds,
    wait_ready,
)


def client_connections(pid: int, port: int) -> int:
    """Established TCP connections on local `port` that process `pid` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                        inodes.add(fields[9])
        except OSError:
            pass
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            n += link.startswith("socket:[") and link[8:-1] in inodes
    except OSError:
        pass
    return n


def machine_busy(before: dict, after: dict) -> float:
    """Busy share of all CPUs together, in percent of one CPU (200 = both cores full)."""
    busy = sum(after[c][0] - before[c][0] for c in after)
    total = sum(after[c][1] - before[c][1] for c in after)
    return 100.0 * len(after) * busy / max(1, total)


class Bench:
    def __init__(self, args, procs: Procs, out: Path) -> None:
        self.args = args
        self.procs = procs
        self.out = out
        self.tmp = Path(tempfile.mkdtemp(prefix="porch-workers-"))
        os.chmod(self.tmp, 0o755)  # nginx workers run as nobody when started by root
        self.origin_port = 0
        self.origin: subprocess.Popen | None = None
        self.porch: dict[int, tuple[int, subprocess.Popen]] = {}  # workers -> (port, process)
        # `nice` execs: the pid stays the program's
        self.nice = ["nice", "-n", str(args.nice)] if args.nice else []

    def start_origin(self) -> None:
        d = self.tmp / "origin"
        (d / "www").mkdir(parents=True)
        (d / "www" / "1m").write_bytes(os.urandom(1 << 20))
        self.origin_port = free_port()
        conf = d / "nginx.conf"
        conf.write_text(origin_conf(d, self.origin_port))
        self.origin = self.procs.start("origin", [*self.nice, "nginx", "-p", f"{d}/", "-c", str(conf),
                                                  "-e", f"{d}/error.log"],
                                       None, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_ready(self.origin, self.origin_port, "origin nginx", [d / "error.log"])
        log(f"origin nginx pid {self.origin.pid} on 127.0.0.1:{self.origin_port}")

    def start_porch(self, workers: int) -> None:
        d = self.tmp / f"porch-{workers}"
        (d / "state").mkdir(parents=True)
        port = free_port()
        text = porch_conf(d, port, self.origin_port, None).replace("workers = 1\n", f"workers = {workers}\n")
        conf = d / "porch.toml"
        conf.write_text(text)
        shutil.copy(conf, self.out / f"porch-{workers}.toml")
        p = self.procs.start(f"porch-{workers}", [*self.nice, self.args.porch, "run", "-c", str(conf)], None,
                             stdout=open(d / "stdout.log", "wb"), stderr=subprocess.STDOUT)
        wait_ready(p, port, f"Porch workers={workers}", [d / "stdout.log", d / "error.log"], timeout=30)
        deadline = time.monotonic() + 10  # all workers up (the first may answer alone)
        while len(tree(p.pid)) < workers + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.porch[workers] = (port, p)
        log(f"Porch workers={workers}: pids {tree(p.pid)} on 127.0.0.1:{port}")

    def wrk(self, workers: int, duration: str, out_file: Path | None) -> dict:
        port, p = self.porch[workers]
        a = self.args
        url = f"http://127.0.0.1:{port}{PAYLOADS[a.payload]}"
        argv = ["wrk", "-c", str(a.connections), "-t", str(a.threads), "-d", duration,
                "--timeout", "5s", "--latency", "-s", str(LUA), url]
        if a.close:
            argv[1:1] = ["-H", "Connection: close"]
        m0, s0, o0, t0 = cpu_times(), tree_cpu_seconds(p.pid), tree_cpu_seconds(self.origin.pid), time.monotonic()
        w = self.procs.start("wrk", [*self.nice, *argv], None, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        spread: list[int] = []

        def sample() -> None:  # how wrk's connections are spread over the workers, mid-run
            time.sleep(min(2.0, float(duration.rstrip("s")) / 2))
            spread.extend(sorted((client_connections(pid, port) for pid in tree(p.pid)[1:]), reverse=True))

        sampler = threading.Thread(target=sample)
        sampler.start()
        text = w.communicate()[0].decode(errors="replace")
        sampler.join()
        m1, s1, o1, t1 = cpu_times(), tree_cpu_seconds(p.pid), tree_cpu_seconds(self.origin.pid), time.monotonic()
        self.procs.procs = [(n, q) for n, q in self.procs.procs if q is not w]
        if out_file is not None:
            out_file.write_text(f"$ {' '.join(argv)}\n{text}")
        line = next((ln for ln in text.splitlines() if ln.startswith("PORCH_BENCH ")), None)
        if w.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed on {url} (exit {w.returncode}):\n{text}")
        r = json.loads(line.split(" ", 1)[1])
        secs = r["duration_us"] / 1e6
        porch_cpu = (s1[0] + s1[1]) - (s0[0] + s0[1])
        r.update(
            workers=workers,
            rps=r["requests"] / secs,
            errors=r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"],
            porch_cpu_pct=100.0 * porch_cpu / (t1 - t0),
            porch_us_per_req=1e6 * porch_cpu / max(1, r["requests"]),
            porch_sys_us_per_req=1e6 * (s1[1] - s0[1]) / max(1, r["requests"]),
            origin_cpu_pct=100.0 * ((o1[0] + o1[1]) - (o0[0] + o0[1])) / (t1 - t0),
            machine_pct=machine_busy(m0, m1),
            spread="+".join(map(str, spread)),
        )
        return r

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def table(results: dict[int, list[dict]], cores: int) -> str:
    base = statistics.median(r["rps"] for r in results[min(results)])
    lines = [
        "| workers | req/s (median) | vs 1 worker | p50 ms | p99 ms | Porch CPU % | Porch CPU us/req (sys) "
        f"| origin CPU % | machine busy % (of {cores * 100}) | errors | req/s per round | connections per worker |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for workers, runs in sorted(results.items()):
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        lines.append(
            f"| {workers} | {med('rps'):,.0f} | {med('rps') / base:.2f}x | {med('p50') / 1000:.2f} | "
            f"{med('p99') / 1000:.2f} | {med('porch_cpu_pct'):.0f} | {med('porch_us_per_req'):.1f} "
            f"({med('porch_sys_us_per_req'):.1f}) | {med('origin_cpu_pct'):.0f} | {med('machine_pct'):.0f} | "
            f"{sum(r['errors'] for r in runs)} | {' / '.join(format(r['rps'], ',.0f') for r in runs)} | "
            f"{' / '.join(r['spread'] for r in runs)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (1,2)")
    ap.add_argument("-c", "--connections", type=int, default=50, help="wrk connections (50)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (1)")
    ap.add_argument("-d", "--duration", default="10s", help="wrk duration per measured run (10s)")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per Porch (3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--payload", default="small", choices=sorted(PAYLOADS), help="small (100 B) or 1m")
    ap.add_argument("--close", action="store_true", help="a new connection per request (Connection: close)")
    ap.add_argument("--nice", type=int, default=0,
                    help="run origin, Porch and wrk at this niceness (e.g. -10 on a machine shared with other work)")
    ap.add_argument("--porch", default=str(REPO / ".venv/bin/porch"), help="the porch executable")
    args = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (bash scripts/test.sh installs it)", file=sys.stderr)
            return 1
    counts = [int(x) for x in args.workers.split(",")]
    out = OUT_ROOT / f"workers-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    procs = Procs()
    bench = Bench(args, procs, out)
    cores = os.cpu_count() or 1
    try:
        m0 = cpu_times()
        time.sleep(3)
        background = machine_busy(m0, cpu_times())
        log(f"background load before starting anything: {background:.0f}% of {cores * 100}%")
        if background > 20:
            log("the machine is busy with other work: figures will be low and noisy")
        bench.start_origin()
        for n in counts:
            bench.start_porch(n)
        for n in counts:
            log(f"warm-up workers={n} {args.warmup}s")
            bench.wrk(n, f"{args.warmup}s", None)
        results: dict[int, list[dict]] = {n: [] for n in counts}
        for rnd in range(args.rounds):
            order = counts[rnd % len(counts):] + counts[:rnd % len(counts)]
            for n in order:
                r = bench.wrk(n, args.duration, out / f"round{rnd + 1}-workers{n}.txt")
                results[n].append(r)
                log(f"round {rnd + 1} workers={n}: {r['rps']:,.0f} req/s, p99 {r['p99'] / 1000:.2f} ms, "
                    f"Porch {r['porch_cpu_pct']:.0f}% CPU = {r['porch_us_per_req']:.1f} us/req, "
                    f"machine {r['machine_pct']:.0f}%, errors {r['errors']}, connections per worker {r['spread']}")
        header = (f"{PAYLOADS[args.payload]}{' with Connection: close' if args.close else ''}, "
                  f"wrk -c {args.connections} -t {args.threads} -d {args.duration}, "
                  f"{args.rounds} rounds (medians), nothing pinned, {cores} cores; background load "
                  f"before the run {background:.0f}% of {cores * 100}%"
                  f"{f', benchmark processes at nice {args.nice}' if args.nice else ''}\n\n")
        text = header + table(results, cores)
        (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": results}, indent=1))
        (out / "summary.md").write_text(text)
        print("\n" + text)
    finally:
        procs.stop_all()
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
