#!/usr/bin/env python3
"""Porch benchmark harness: Porch vs nginx as a reverse proxy, on one machine.

    python3 bench/run.py              # throughput + latency (wrk), small and 1 MiB
    python3 bench/run.py --idle       # RSS holding 10,000 idle keep-alive connections
    python3 bench/run.py --profile    # py-spy profile of Porch under the small-response load

Everything it starts (an origin nginx, Porch, an nginx reverse proxy, wrk, the
idle client, py-spy) runs from a fresh temporary directory and is stopped by
pid when the run ends, also on Ctrl-C and on errors.  Raw outputs go to
bench/out/<mode>-<timestamp>/.  See bench/RESULTS.md ("Method") for details.

Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT_ROOT = BENCH / "out"
LUA = BENCH / "report.lua"
IDLE_CLIENT = BENCH / "idle_clients.py"

PROXY_CPU = "0"  # the proxy under test
LOAD_CPU = "1"  # wrk, the origin, the idle client, py-spy

SMALL_BODY = ("porch-bench small response " + "x" * 72)[:99] + "\n"  # 100 bytes
LARGE_SIZE = 1 << 20
PAYLOADS = {"small": "/small", "1m": "/1m"}
# File descriptors for everything started: the hard limit (a sandbox may not allow raising it).
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
if NOFILE == resource.RLIM_INFINITY or NOFILE > 1 << 20:
    NOFILE = 1 << 20

TARGET_LABEL = {"direct": "direct (origin)", "porch": "Porch", "nginx": "nginx proxy",
                "bare": "bare uvloop+httptools"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(n: int = NOFILE) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(n, soft), max(n, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- processes


class Procs:
    """Every process the harness starts, so that all of them can be stopped by pid."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], cpu: str | None, **kw) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", cpu] + argv  # taskset execs: the pid is the program's
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, start_new_session=True, preexec_fn=raise_nofile, **kw)
        self.procs.append((name, p))
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The process group is the one this harness created for it (pgid == its pid):
        # kill whatever is left in it (e.g. nginx workers of a killed master).
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for name, p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += children(p)
    return seen


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def tree_rss_kib(pid: int) -> tuple[int, dict[int, int]]:
    per = {p: rss_kib(p) for p in tree(pid)}
    return sum(per.values()), per


def tree_fds(pid: int) -> int:
    n = 0
    for p in tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, PermissionError):
            pass
    return n


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by pid and its descendants."""
    user = system = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
        except (FileNotFoundError, IndexError):
            pass
    return user / CLK_TCK, system / CLK_TCK


def cpu_times() -> dict[str, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + v[4]
                out[name[3:]] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def cpu_busy(before, after, cpu: str) -> float:
    b0, t0 = before[cpu]
    b1, t1 = after[cpu]
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


# --------------------------------------------------------------------------- configs

NGINX_TEMP = """
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
"""


def origin_conf(d: Path, port: int) -> str:
    return f"""# origin ("upstream") for the benchmark: fast, no logging
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections 4096; }}
http {{
    access_log off;
{NGINX_TEMP.format(d=d)}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {d}/www;
        location = /small {{ default_type text/plain; return 200 "{SMALL_BODY.rstrip()}\\n"; }}
        location = /1m {{ }}
        location = /echo {{
            default_type text/plain;
            return 200 "host=$http_host xri=$http_x_real_ip xff=$http_x_forwarded_for xfp=$http_x_forwarded_proto xfh=$http_x_forwarded_host xfport=$http_x_forwarded_port conn=$http_connection\\n";
        }}
    }}
}}
"""


def nginx_proxy_conf(d: Path, port: int, origin: int, keepalive_timeout: int,
                     worker_connections: int) -> str:
    return f"""# nginx as the reverse proxy under test
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {worker_connections}; }}
http {{
    access_log {d}/access.log combined;
{NGINX_TEMP.format(d=d)}
    keepalive_timeout {keepalive_timeout}s;
    keepalive_requests 100000000;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
        }}
    }}
}}
"""


def porch_conf(d: Path, port: int, origin: int, keepalive_timeout: int | None) -> str:
    ka = f"keepalive_timeout = {keepalive_timeout}\n" if keepalive_timeout else ""
    return f"""[porch]
http_port = {port}
bind = ["127.0.0.1"]
access_log = "{d}/access.log"
error_log = "{d}/error.log"
state_dir = "{d}/state"
workers = 1
{ka}
[[site]]
proxy = "http://127.0.0.1:{origin}"
"""


# --------------------------------------------------------------------------- HTTP checks


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"User-Agent": "porch-bench-check"})
        r = c.getresponse()
        body = r.read()
        return r.status, dict(r.getheaders()), body
    finally:
        c.close()


def wait_ready(p: subprocess.Popen, port: int, name: str, logs: list[Path],
               timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if p.poll() is not None:
            break
        try:
            status, _, _ = http_get(port, "/small", timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    tails = []
    for lp in logs:
        if lp.exists():
            tails.append(f"--- {lp}:\n" + "\n".join(lp.read_text(errors="replace").splitlines()[-20:]))
    state = f"exited with {p.returncode}" if p.poll() is not None else f"not answering ({last})"
    raise RuntimeError(f"{name} did not become ready: {state}\n" + "\n".join(tails))


# --------------------------------------------------------------------------- the setup


class Setup:
    """The origin, Porch and the nginx proxy, each in its own directory under a temp dir."""

    def __init__(self, args, procs: Procs, out: Path, keepalive_timeout: int | None,
                 nginx_worker_connections: int) -> None:
        self.args = args
        self.procs = procs
        self.out = out
        self.tmp = Path(tempfile.mkdtemp(prefix="porch-bench-"))
        os.chmod(self.tmp, 0o755)  # nginx workers run as nobody when started by root
        self.ka = keepalive_timeout
        self.nginx_wc = nginx_worker_connections
        self.ports: dict[str, int] = {}
        self.pids: dict[str, subprocess.Popen] = {}
        self.porch_error: str | None = None

    def _nginx(self, name: str, conf: str) -> subprocess.Popen:
        d = self.tmp / name
        conf_path = d / "nginx.conf"
        conf_path.write_text(conf)
        shutil.copy(conf_path, self.out / f"{name}-nginx.conf")
        cpu = LOAD_CPU if name == "origin" else PROXY_CPU
        err = open(d / "stderr.log", "wb")
        return self.procs.start(name, ["nginx", "-p", f"{d}/", "-c", str(conf_path),
                                       "-e", f"{d}/error.log"],
                                cpu, stdout=err, stderr=subprocess.STDOUT)

    def start_origin(self) -> None:
        d = self.tmp / "origin"
        (d / "www").mkdir(parents=True)
        (d / "www" / "1m").write_bytes(os.urandom(LARGE_SIZE))
        port = free_port()
        p = self._nginx("origin", origin_conf(d, port))
        wait_ready(p, port, "origin nginx", [d / "error.log", d / "stderr.log"])
        self.ports["direct"], self.pids["direct"] = port, p
        log(f"origin nginx pid {p.pid} on 127.0.0.1:{port} (CPU {LOAD_CPU})")

    def start_nginx(self) -> None:
        d = self.tmp / "nginx"
        d.mkdir()
        port = free_port()
        conf = nginx_proxy_conf(d, port, self.ports["direct"], self.ka or 75, self.nginx_wc)
        p = self._nginx("nginx", conf)
        wait_ready(p, port, "nginx proxy", [d / "error.log", d / "stderr.log"])
        self.ports["nginx"], self.pids["nginx"] = port, p
        log(f"nginx proxy pid {p.pid} (+{len(tree(p.pid)) - 1} worker) on 127.0.0.1:{port} (CPU {PROXY_CPU})")

    def start_porch(self) -> bool:
        porch = self.args.porch
        if not Path(porch).exists():
            self.porch_error = f"{porch} not found"
            log(f"Porch not started: {self.porch_error}")
            return False
        d = self.tmp / "porch"
        (d / "state").mkdir(parents=True)
        port = free_port()
        conf_path = d / "porch.toml"
        conf_path.write_text(porch_conf(d, port, self.ports["direct"], self.ka))
        shutil.copy(conf_path, self.out / "porch.toml")
        out = open(d / "stdout.log", "wb")
        p = self.procs.start("porch", [porch, "run", "-c", str(conf_path)], PROXY_CPU,
                             stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(p, port, "Porch", [d / "stdout.log", d / "error.log"], timeout=20)
        except RuntimeError as exc:
            self.porch_error = str(exc)
            log(f"Porch not runnable, its rows stay 'not yet measured':\n{exc}")
            self.procs.stop(p)
            return False
        self.ports["porch"], self.pids["porch"] = port, p
        log(f"Porch pid {p.pid} ({len(tree(p.pid))} process(es)) on 127.0.0.1:{port} (CPU {PROXY_CPU})")
        return True

    def start_bare(self) -> None:
        """bench/bare_proxy.py: the floor for any Python proxy on this machine."""
        port = free_port()
        venv_python = REPO / ".venv" / "bin" / "python"  # it needs uvloop and httptools
        python = str(venv_python) if venv_python.exists() else sys.executable
        argv = [python, str(REPO / "bench" / "bare_proxy.py"), str(port), str(self.ports["direct"])]
        p = self.procs.start("bare", argv, PROXY_CPU, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_ready(p, port, "bare proxy", [], timeout=10)
        self.ports["bare"], self.pids["bare"] = port, p
        log(f"bare proxy pid {p.pid} on 127.0.0.1:{port} (CPU {PROXY_CPU})")

    def verify(self) -> None:
        """Every target answers both payloads correctly; record what the origin sees."""
        lines = []
        for target, port in self.ports.items():
            s, h, b = http_get(port, "/small")
            if s != 200 or b.decode(errors="replace") != SMALL_BODY:
                raise RuntimeError(f"{target} /small: HTTP {s}, body {b[:120]!r}")
            s, h1, b = http_get(port, "/1m", timeout=20)
            if s != 200 or len(b) != LARGE_SIZE:
                raise RuntimeError(f"{target} /1m: HTTP {s}, {len(b)} bytes")
            s, _, echo = http_get(port, "/echo")
            lines.append(f"{target}: /small headers {h}")
            lines.append(f"{target}: /1m headers {h1}")
            lines.append(f"{target}: origin saw: {echo.decode(errors='replace').strip()}")
        (self.out / "verify.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            if "origin saw" in line:
                log(line)

    def collect_logs(self) -> None:
        for name in ("origin", "nginx", "porch"):
            d = self.tmp / name
            for fn in ("error.log", "stderr.log", "stdout.log"):
                f = d / fn
                if f.exists() and f.stat().st_size:
                    data = f.read_bytes()[-200_000:]
                    (self.out / f"{name}-{fn}").write_bytes(data)
            acc = d / "access.log"
            if acc.exists():
                with open(acc, "rb") as f:
                    head = b"".join(f.readline() for _ in range(5))
                size = acc.stat().st_size
                (self.out / f"{name}-access.log.head").write_bytes(
                    head + f"... ({size} bytes in total)\n".encode())

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- wrk


def run_wrk(args, procs: Procs, setup: Setup, target: str, payload: str, duration: str,
            out_file: Path | None) -> dict:
    url = f"http://127.0.0.1:{setup.ports[target]}{PAYLOADS[payload]}"
    argv = ["wrk", "-c", str(args.connections), "-t", str(args.threads), "-d", duration,
            "--timeout", args.wrk_timeout, "--latency", "-s", str(LUA), url]
    server = setup.pids[target].pid
    c0, s0, t0 = cpu_times(), tree_cpu_seconds(server), time.monotonic()
    p = procs.start("wrk", argv, LOAD_CPU, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = p.communicate()[0].decode(errors="replace")
    c1, s1, t1 = cpu_times(), tree_cpu_seconds(server), time.monotonic()
    procs.procs = [(n, q) for n, q in procs.procs if q is not p]
    if out_file is not None:
        out_file.write_text(f"$ taskset -c {LOAD_CPU} {' '.join(argv)}\n{text}")
    line = next((ln for ln in text.splitlines() if ln.startswith("PORCH_BENCH ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed on {url} (exit {p.returncode}):\n{text}")
    r = json.loads(line.split(" ", 1)[1])
    secs = r["duration_us"] / 1e6
    r.update(
        target=target, payload=payload,
        rps=r["requests"] / secs,
        mibps=r["bytes"] / secs / (1 << 20),
        errors=r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"],
        server_cpu=100.0 * (s1[0] + s1[1] - s0[0] - s0[1]) / (t1 - t0),
        server_sys=100.0 * (s1[1] - s0[1]) / (t1 - t0),
        cpu0=cpu_busy(c0, c1, PROXY_CPU), cpu1=cpu_busy(c0, c1, LOAD_CPU),
    )
    return r


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def summarize(results: dict, targets: list[str], payloads: list[str], measured: set[str]) -> tuple[dict, str]:
    summary: dict = {}
    for payload in payloads:
        summary[payload] = {}
        for target in targets:
            runs = results.get(payload, {}).get(target, [])
            if not runs:
                continue
            summary[payload][target] = {
                "rounds": len(runs),
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_us": statistics.median(r["p50"] for r in runs),
                "p99_us": statistics.median(r["p99"] for r in runs),
                "mibps": statistics.median(r["mibps"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "server_cpu": statistics.median(r["server_cpu"] for r in runs),
                "server_sys": statistics.median(r["server_sys"] for r in runs),
                "cpu1": statistics.median(r["cpu1"] for r in runs),
                "rps_all": [round(r["rps"]) for r in runs],
                "p99_all_us": [r["p99"] for r in runs],
            }
    lines = []
    for payload in payloads:
        big = payload == "1m"
        lines.append(f"\n### `{PAYLOADS[payload]}` ({'1 MiB' if big else '100 B'} body)\n")
        head = "| target | req/s (median) | p50 ms | p99 ms (median) |"
        sep = "|---|---:|---:|---:|"
        if big:
            head += " MiB/s |"
            sep += "---:|"
        head += " errors | server CPU % (sys) | CPU1 busy % | req/s per round |"
        sep += "---:|---:|---:|---|"
        lines += [head, sep]
        for target in targets:
            s = summary[payload].get(target)
            if s is None:
                cells = ["not yet measured"] + ["–"] * (3 + big + 4)
            else:
                cells = [f"{s['rps']:,.0f}", fmt_ms(s["p50_us"]), fmt_ms(s["p99_us"])]
                if big:
                    cells.append(f"{s['mibps']:,.1f}")
                cells += [str(s["errors"]), f"{s['server_cpu']:.0f} ({s['server_sys']:.0f})", f"{s['cpu1']:.0f}",
                          " / ".join(f"{x:,}" for x in s["rps_all"])]
            lines.append(f"| {TARGET_LABEL[target]} | " + " | ".join(cells) + " |")
        porch, ngx = summary[payload].get("porch"), summary[payload].get("nginx")
        if porch and ngx:
            rr = porch["rps"] / ngx["rps"]
            pr = porch["p99_us"] / ngx["p99_us"]
            summary[payload]["ratio"] = {"rps": rr, "p99": pr}
            if big:
                goal = "target >= 1.0x" + (" (met)" if rr >= 1.0 else " (NOT met)")
                lines.append(f"\nPorch/nginx: throughput **{rr:.2f}x** ({goal}); "
                             f"p99 **{pr:.2f}x**")
            else:
                g1 = "met" if rr >= 0.7 else "NOT met"
                g2 = "met" if pr <= 2.0 else "NOT met"
                lines.append(f"\nPorch/nginx: req/s **{rr:.2f}x** (target >= 0.7x, {g1}); "
                             f"p99 **{pr:.2f}x** (target <= 2x, {g2})")
        else:
            lines.append("\nPorch/nginx ratios: not yet measured")
    return summary, "\n".join(lines) + "\n"


def mode_throughput(args, procs: Procs, out: Path) -> dict:
    setup = Setup(args, procs, out, keepalive_timeout=None, nginx_worker_connections=1024)
    try:
        setup.start_origin()
        if "nginx" in args.targets:
            setup.start_nginx()
        if "porch" in args.targets:
            setup.start_porch()
        if "bare" in args.targets:
            setup.start_bare()
        setup.verify()
        targets = [t for t in args.targets if t in setup.ports]
        payloads = args.payloads
        if args.warmup > 0:
            for payload in payloads:
                for target in targets:
                    log(f"warm-up {target} {PAYLOADS[payload]} {args.warmup}s")
                    run_wrk(args, procs, setup, target, payload, f"{args.warmup}s",
                            out / f"warmup-{payload}-{target}.txt")
        results: dict = {p: {t: [] for t in targets} for p in payloads}
        for rnd in range(1, args.rounds + 1):
            order = targets[(rnd - 1) % len(targets):] + targets[:(rnd - 1) % len(targets)]
            for payload in payloads:
                for target in order:
                    r = run_wrk(args, procs, setup, target, payload, args.duration,
                                out / f"round{rnd}-{payload}-{target}.txt")
                    r["round"] = rnd
                    results[payload][target].append(r)
                    log(f"round {rnd} {payload:5} {target:6} {r['rps']:10,.0f} req/s  "
                        f"p99 {fmt_ms(r['p99'])} ms  {r['mibps']:8.1f} MiB/s  err {r['errors']}  "
                        f"server CPU {r['server_cpu']:.0f}% (sys {r['server_sys']:.0f}%)  CPU1 {r['cpu1']:.0f}%")
        summary, table = summarize(results, args.targets, payloads, set(targets))
        header = (f"wrk -c {args.connections} -t {args.threads} -d {args.duration} --latency; "
                  f"{args.rounds} rounds, medians; proxy on CPU {PROXY_CPU}, wrk+origin on CPU {LOAD_CPU}\n")
        if setup.porch_error:
            header += f"\nPorch not measured: {setup.porch_error.splitlines()[0]}\n"
        (out / "results.json").write_text(json.dumps(
            {"args": vars(args), "runs": results, "summary": summary}, indent=1, default=str))
        (out / "summary.md").write_text(header + table)
        print("\n" + header + table)
        return summary
    finally:
        setup.collect_logs()
        procs.stop_all()
        setup.cleanup()


# --------------------------------------------------------------------------- idle


IDLE_PROTOCOLS = {"h1": ("HTTP/1.1", []), "tls": ("HTTP/1.1 over TLS", ["--tls"]),
                  "h2": ("HTTP/2 over TLS", ["--h2"])}


def idle_servers(args, setup: Setup, procs: Procs, out: Path, protocol: str) -> dict[str, tuple]:
    """Porch and nginx for one protocol, fresh (a server that held 10,000 connections
    keeps some of that memory): {target: (Popen, port)}.  TLS ones: bench/tls.py's
    configs (same certificate, ECDSA P-256; nginx with `http2` on its listener)."""
    servers = {}
    if protocol == "h1":
        if "porch" in args.targets and setup.start_porch():
            servers["porch"] = (setup.pids["porch"], setup.ports["porch"])
        if "nginx" in args.targets:
            setup.start_nginx()
            servers["nginx"] = (setup.pids["nginx"], setup.ports["nginx"])
        return servers
    import tls as tlsbench  # bench/tls.py: needs the venv's Python (cryptography, porch)

    if not hasattr(setup, "cert"):
        setup.cert = tlsbench.make_cert(setup.tmp)
    origin = setup.ports["direct"]
    if "porch" in args.targets:
        servers["porch"] = tlsbench.start_porch(
            args, setup, procs, out, f"porch-{protocol}", origin, *setup.cert,
            f"keepalive_timeout = {args.idle_keepalive}", "")
    if "nginx" in args.targets:
        d = setup.tmp / f"nginx-{protocol}"
        d.mkdir()
        port = free_port()
        conf = tlsbench.nginx_tls_conf(d, port, origin, *setup.cert, keepalive_timeout=args.idle_keepalive,
                                       worker_connections=args.idle_conns + 1024, http2=protocol == "h2")
        p = setup._nginx(f"nginx-{protocol}", conf)
        tlsbench.wait_https(p, port, "nginx")
        servers["nginx"] = (p, port)
    return servers


def idle_client(procs: Procs, out: Path, name: str, port: int, conns: int, flags: list[str]) -> subprocess.Popen:
    client = procs.start("idle-client", [sys.executable, str(IDLE_CLIENT), "--port", str(port),
                                         "--conns", str(conns), *flags],
                         LOAD_CPU, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=open(out / f"idle-client-{name}.stderr", "ab"), text=True)
    return client


def idle_round(args, procs: Procs, out: Path, protocol: str, target: str, pid: int, port: int) -> dict:
    """RSS of `pid`'s tree before, while holding args.idle_conns idle connections of
    `protocol`, and after they close."""
    n, flags, name = args.idle_conns, IDLE_PROTOCOLS[protocol][1], f"{protocol}-{target}"
    # 20 connections of the same protocol first: each side has served it (lazy imports,
    # first buffers) before the baseline
    warm = idle_client(procs, out, name, port, 20, flags)
    ready = warm.stdout.readline().strip()
    warm.stdin.write("exit\n")
    warm.stdin.flush()
    warm.wait(30)
    procs.procs = [(nm, q) for nm, q in procs.procs if q is not warm]
    if ready != "READY ok=20 failed=0":
        raise RuntimeError(f"idle client warm-up for {name} failed: {ready!r}")
    time.sleep(1)
    base, base_per = tree_rss_kib(pid)
    base_fds = tree_fds(pid)
    log(f"{name}: baseline RSS {base / 1024:.1f} MiB {base_per}, {base_fds} fds; opening {n} connections")
    t0 = time.monotonic()
    client = idle_client(procs, out, name, port, n, flags)
    ready = client.stdout.readline().strip()
    opened_in = time.monotonic() - t0
    if not ready.startswith("READY"):
        raise RuntimeError(f"idle client for {name} failed: {ready!r}")
    log(f"{name}: {ready} in {opened_in:.1f}s")
    time.sleep(args.idle_settle)
    held, held_per = tree_rss_kib(pid)
    held_fds = tree_fds(pid)
    client.stdin.write("check\n")
    client.stdin.flush()
    alive = client.stdout.readline().strip()
    log(f"{name}: with {n} idle connections RSS {held / 1024:.1f} MiB {held_per}, "
        f"{held_fds} fds; client: {alive}")
    time.sleep(args.idle_settle)
    held2, _ = tree_rss_kib(pid)
    client.stdin.write("check\n")
    client.stdin.flush()
    alive2 = client.stdout.readline().strip()
    client.stdin.write("exit\n")
    client.stdin.flush()
    client.wait(60)
    procs.procs = [(nm, q) for nm, q in procs.procs if q is not client]
    time.sleep(2)
    after, _ = tree_rss_kib(pid)
    log(f"{name}: {alive2}; RSS after closing them {after / 1024:.1f} MiB")
    opened = int(re.search(r"ok=(\d+)", ready).group(1))
    return {
        "conns": n, "ready": ready, "open_seconds": round(opened_in, 2),
        "alive_check_1": alive, "alive_check_2": alive2,
        "rss_baseline_kib": base, "rss_baseline_per_process": base_per,
        "rss_held_kib": held, "rss_held_per_process": held_per,
        "rss_held_later_kib": held2, "rss_after_close_kib": after,
        "fds_baseline": base_fds, "fds_held": held_fds,
        "per_conn_kib": (held - base) / max(opened, 1),
    }


def mode_idle(args, procs: Procs, out: Path) -> dict:
    n = args.idle_conns
    setup = Setup(args, procs, out, keepalive_timeout=args.idle_keepalive,
                  nginx_worker_connections=n + 1024)
    results: dict[str, dict[str, dict]] = {}
    try:
        setup.start_origin()
        for protocol in args.idle_protocols:
            servers = idle_servers(args, setup, procs, out, protocol)
            try:
                for target, (p, port) in servers.items():
                    results.setdefault(protocol, {})[target] = idle_round(args, procs, out, protocol, target,
                                                                         p.pid, port)
            finally:
                for p, _ in servers.values():
                    procs.stop(p)
                    procs.procs = [(nm, q) for nm, q in procs.procs if q is not p]
        lines = [f"\n{n} idle keep-alive connections per protocol (each served one GET /small first); "
                 f"keepalive_timeout {args.idle_keepalive}s on both; one worker each; RSS from "
                 f"/proc/PID/status VmRSS, summed over the process tree; fresh servers per protocol\n",
                 "| protocol | proxy | RSS before | RSS holding conns | delta | per connection | fds holding "
                 "| opened | still open later | RSS after close |",
                 "|---|---|---:|---:|---:|---:|---:|---|---|---:|"]
        for protocol in args.idle_protocols:
            for target in ("porch", "nginx"):
                r = results.get(protocol, {}).get(target)
                label = f"| {IDLE_PROTOCOLS[protocol][0]} | {TARGET_LABEL[target]} |"
                if r is None:
                    lines.append(f"{label} not yet measured | – | – | – | – | – | – | – |")
                    continue
                lines.append(
                    f"{label} {r['rss_baseline_kib'] / 1024:.1f} MiB | "
                    f"{r['rss_held_kib'] / 1024:.1f} MiB | {(r['rss_held_kib'] - r['rss_baseline_kib']) / 1024:.1f} MiB | "
                    f"{r['per_conn_kib']:.2f} KiB | {r['fds_held']} | {r['ready'].removeprefix('READY ')} | "
                    f"{r['alive_check_2'].removeprefix('ALIVE ').split(' unexpected')[0]} | "
                    f"{r['rss_after_close_kib'] / 1024:.1f} MiB |")
        for protocol, pair in results.items():
            if "porch" in pair and "nginx" in pair:
                per = pair["porch"]["per_conn_kib"] / max(pair["nginx"]["per_conn_kib"], 1e-9)
                held = pair["porch"]["rss_held_kib"] / pair["nginx"]["rss_held_kib"]
                lines.append(f"\n{IDLE_PROTOCOLS[protocol][0]}: Porch/nginx per connection **{per:.2f}x**, "
                             f"RSS holding {n} connections {held:.2f}x")
                pair["ratio_per_conn"], pair["ratio_rss_held"] = per, held
        if setup.porch_error:
            lines.append(f"\nPorch not measured: {setup.porch_error.splitlines()[0]}")
        table = "\n".join(lines) + "\n"
        (out / "idle.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
        (out / "summary.md").write_text(table)
        print(table)
        return results
    finally:
        setup.collect_logs()
        procs.stop_all()
        setup.cleanup()


# --------------------------------------------------------------------------- profile


def frame_key(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (path/to/file.py)'."""
    frame = frame.strip()
    if frame.endswith(")") and " (" in frame:
        name, loc = frame.rsplit(" (", 1)
        loc = loc[:-1]
        if ":" in loc and loc.rsplit(":", 1)[1].isdigit():
            loc = loc.rsplit(":", 1)[0]
        return f"{name} ({loc})"
    return frame


NATIVE_FILE = re.compile(r"\.(c|h|cc|cpp|so)(\.[0-9]+)*$|^0x[0-9a-f]+$|^\[|^$")


def is_native(key: str) -> bool:
    """A frame from C (libc, the interpreter, an extension) rather than Python/Cython code."""
    name, _, loc = key.rpartition(" (")
    if not name:
        return True
    return bool(NATIVE_FILE.search(loc.rstrip(")"))) or name.startswith("0x")


def aggregate_raw(raw: Path, top: int = 25) -> tuple[str, dict]:
    """Collapsed stacks from `py-spy record --format raw` -> own/total time tables."""
    own: Counter = Counter()
    total: Counter = Counter()
    files: Counter = Counter()
    pyown: Counter = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";")
                  if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        keys = [frame_key(f) for f in frames]
        own[keys[-1]] += n
        for k in set(keys):
            total[k] += n
        leaf = keys[-1]
        files[leaf.rsplit(" (", 1)[1].rstrip(")") if " (" in leaf else leaf] += n
        py = [k for k in keys if not is_native(k)]
        pyown[py[-1] if py else keys[-1]] += n

    def pct(x: int) -> str:
        return f"{100.0 * x / max(1, samples):5.1f}%"

    out = [f"{samples} samples (active, non-idle)\n", "Top functions by own time:"]
    out += [f"  {pct(c)}  {k}" for k, c in own.most_common(top)]
    out += ["", "Innermost Python (or Cython) function, native calls below it folded in:"]
    out += [f"  {pct(c)}  {k}" for k, c in pyown.most_common(top)]
    out += ["", "Own time by file/library:"]
    out += [f"  {pct(c)}  {k}" for k, c in files.most_common(15)]
    out += ["", "Top functions by total (inclusive) time:"]
    out += [f"  {pct(c)}  {k}" for k, c in total.most_common(top)]
    data = {"samples": samples,
            "own": [(k, c) for k, c in own.most_common(60)],
            "files": [(k, c) for k, c in files.most_common(30)],
            "python_own": [(k, c) for k, c in pyown.most_common(60)],
            "total": [(k, c) for k, c in total.most_common(60)]}
    return "\n".join(out) + "\n", data


def mode_profile(args, procs: Procs, out: Path) -> None:
    setup = Setup(args, procs, out, keepalive_timeout=None, nginx_worker_connections=1024)
    try:
        setup.start_origin()
        if not setup.start_porch():
            raise RuntimeError("--profile needs a runnable Porch")
        setup.verify()
        pid = setup.pids["porch"].pid
        log("warm-up 3s")
        run_wrk(args, procs, setup, "porch", "small", "3s", out / "profile-warmup.txt")
        pyspy = args.py_spy
        secs = args.profile_seconds
        for fmt, fname in (("raw", "profile.raw"), ("flamegraph", "profile.svg")):
            argv = [pyspy, "record", "--native", "--subprocesses", "--rate", str(args.profile_rate),
                    "--duration", str(secs), "--format", fmt, "-o", str(out / fname),
                    "--pid", str(pid)]
            log(f"py-spy {fmt}: {' '.join(argv)}")
            sp = procs.start("py-spy", argv, LOAD_CPU, stdout=open(out / f"py-spy-{fmt}.log", "wb"),
                             stderr=subprocess.STDOUT)
            time.sleep(0.5)
            r = run_wrk(args, procs, setup, "porch", "small", f"{secs + 2}s",
                        out / f"profile-wrk-{fmt}.txt")
            sp.wait(60)
            procs.procs = [(n, q) for n, q in procs.procs if q is not sp]
            log(f"under py-spy ({fmt}): {r['rps']:,.0f} req/s, p99 {fmt_ms(r['p99'])} ms, "
                f"Porch CPU {r['server_cpu']:.0f}% (of which system {r['server_sys']:.0f}%)")
            if sp.returncode != 0:
                raise RuntimeError(f"py-spy failed, see {out / f'py-spy-{fmt}.log'}")
        text, data = aggregate_raw(out / "profile.raw", args.profile_top)
        (out / "profile-top.txt").write_text(text)
        (out / "profile-top.json").write_text(json.dumps(data, indent=1))
        shutil.copy(out / "profile.svg", OUT_ROOT / "profile.svg")
        print("\n" + text)
        log(f"flame graph: {out / 'profile.svg'} (also {OUT_ROOT / 'profile.svg'})")
    finally:
        setup.collect_logs()
        procs.stop_all()
        setup.cleanup()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None, collect: dict | None = None) -> int:
    """Run the benchmark of the command line `argv`; with `collect`, its summary (the
    medians of results.json) goes in collect["summary"] too (bench/all.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--idle", action="store_true", help="RSS holding idle keep-alive connections")
    mode.add_argument("--profile", action="store_true", help="py-spy profile of Porch (small responses)")
    mode.add_argument("--aggregate", metavar="RAW", help="only summarise a py-spy raw file")
    ap.add_argument("-c", "--connections", type=int, default=50, help="wrk connections (50)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (1)")
    ap.add_argument("-d", "--duration", default="10s", help="wrk duration per measured run (10s)")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target and payload (3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--wrk-timeout", default="5s", help="wrk --timeout (5s)")
    ap.add_argument("--targets", default="direct,porch,nginx,bare",
                    help="comma list from direct,porch,nginx,bare (all)")
    ap.add_argument("--payloads", default="small,1m", help="comma list from small,1m (both)")
    ap.add_argument("--porch", default=str(REPO / ".venv/bin/porch"), help="the porch executable")
    ap.add_argument("--py-spy", default=str(REPO / ".venv/bin/py-spy"), help="the py-spy executable")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle connections (10000)")
    ap.add_argument("--idle-keepalive", type=int, default=600,
                    help="keepalive timeout, seconds, for both proxies in --idle (600)")
    ap.add_argument("--idle-settle", type=float, default=5.0, help="seconds before reading RSS (5)")
    ap.add_argument("--idle-protocols", default="h1,tls,h2",
                    help="comma list from h1,tls,h2 for --idle (all; tls and h2 need the venv's Python)")
    ap.add_argument("--quick", action="store_true",
                    help="--idle: a smoke check, 200 connections per protocol and 1 s settle")
    ap.add_argument("--profile-seconds", type=int, default=15, help="py-spy duration (15)")
    ap.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s (100)")
    ap.add_argument("--profile-top", type=int, default=25, help="rows in the profile tables (25)")
    args = ap.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.payloads = [p.strip() for p in args.payloads.split(",") if p.strip()]
    for t in args.targets:
        if t not in TARGET_LABEL:
            ap.error(f"unknown target {t}")
    for p in args.payloads:
        if p not in PAYLOADS:
            ap.error(f"unknown payload {p}")
    args.idle_protocols = [p.strip() for p in args.idle_protocols.split(",") if p.strip()]
    for p in args.idle_protocols:
        if p not in IDLE_PROTOCOLS:
            ap.error(f"unknown --idle-protocols entry {p}")
    if args.quick and args.idle:
        args.idle_conns, args.idle_settle = 200, 1.0

    if args.aggregate:
        print(aggregate_raw(Path(args.aggregate), args.profile_top)[0])
        return 0

    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install nginx wrk util-linux)", file=sys.stderr)
            return 2
    if os.cpu_count() is None or os.cpu_count() < 2:
        print("needs 2 CPUs (proxy on CPU 0, load on CPU 1)", file=sys.stderr)
        return 2
    raise_nofile()

    name = "idle" if args.idle else "profile" if args.profile else "throughput"
    out = OUT_ROOT / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    log(f"raw outputs in {out}")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    procs = Procs()
    try:
        if args.idle:
            results = mode_idle(args, procs, out)
            if collect is not None:
                collect["summary"] = results
        elif args.profile:
            mode_profile(args, procs, out)
        else:
            summary = mode_throughput(args, procs, out)
            if collect is not None:
                collect["summary"] = summary
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except RuntimeError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        procs.stop_all()
    log(f"done; raw outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
