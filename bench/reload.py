#!/usr/bin/env python3
"""Zero-downtime reload, measured: N reloads in a row under wrk, counting every failure.

    python3 bench/reload.py                  # 20 reloads, workers = 2
    python3 bench/reload.py --reloads 50 --workers 1

Two origin nginx servers, A and B, answer `/small` with their own port.  Porch starts
in front of A.  While two wrk runs load it, one with keep-alive connections and one
opening a new connection per request (`Connection: close`), and while a long download
(curl, rate-limited, a file of the origin's) runs, the config is rewritten and
`porch reload` run N times in a row, the upstream alternating B, A, B ...  After each
reload one request on a new connection must reach the upstream just named.

Reported: wrk's requests and its error counters (connect = refused, read = reset or
closed under a request, write, timeout, status = 4xx/5xx answers), how long each
reload took, whether each post-reload request reached the new upstream, and whether
the download came through whole (size and sha256).  Everything must be zero / yes.

Imports the harness pieces from bench/run.py.  Raw outputs: bench/out/reload-<time>/.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import LUA, NOFILE, OUT_ROOT, REPO, Procs, free_port, log, tree, wait_ready  # noqa: E402

BIG = 256 << 20  # the long download


def origin_conf(d: Path, port: int) -> str:
    return f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {d}/www;
        location = /small {{ default_type text/plain; return 200 "origin $server_port\\n"; }}
        location = /big {{ }}
    }}
}}
"""


def porch_conf(d: Path, port: int, origin: int, workers: int) -> str:
    return f"""[porch]
http_port = {port}
bind = ["127.0.0.1"]
access_log = "{d}/access.log"
error_log = "{d}/error.log"
state_dir = "{d}/state"
workers = {workers}

[[site]]
proxy = "http://127.0.0.1:{origin}"
"""


def fetch(port: int, path: str = "/small") -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wrk_result(text: str) -> dict:
    line = next((ln for ln in text.splitlines() if ln.startswith("PORCH_BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{text}")
    return json.loads(line.split(" ", 1)[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reloads", type=int, default=20, help="reloads in a row (20)")
    ap.add_argument("--workers", type=int, default=2, help="Porch workers (2)")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between reloads (0.5)")
    ap.add_argument("-c", "--connections", type=int, default=50, help="wrk keep-alive connections (50)")
    ap.add_argument("--close-connections", type=int, default=10, help="wrk Connection: close connections (10)")
    ap.add_argument("--porch", default=str(REPO / ".venv/bin/porch"), help="the porch executable")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (bash scripts/test.sh installs it)", file=sys.stderr)
            return 1
    out = OUT_ROOT / f"reload-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="porch-reload-"))
    os.chmod(tmp, 0o755)
    procs = Procs()
    try:
        origins = {}
        for name in ("A", "B"):
            d = tmp / f"origin-{name}"
            (d / "www").mkdir(parents=True)
            port = free_port()
            if name == "A":
                (d / "www" / "big").write_bytes(os.urandom(BIG))
            (d / "nginx.conf").write_text(origin_conf(d, port))
            p = procs.start(f"origin-{name}", ["nginx", "-p", f"{d}/", "-c", str(d / "nginx.conf"),
                                               "-e", f"{d}/error.log"], None,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            wait_ready(p, port, f"origin {name}", [d / "error.log"])
            origins[name] = port
        big_sha = hashlib.sha256((tmp / "origin-A" / "www" / "big").read_bytes()).hexdigest()
        d = tmp / "porch"
        (d / "state").mkdir(parents=True)
        port = free_port()
        conf = d / "porch.toml"
        conf.write_text(porch_conf(d, port, origins["A"], args.workers))
        porch = procs.start("porch", [args.porch, "run", "-c", str(conf)], None,
                            stdout=open(d / "stdout.log", "wb"), stderr=subprocess.STDOUT)
        wait_ready(porch, port, "Porch", [d / "stdout.log", d / "error.log"], timeout=30)
        log(f"Porch pids {tree(porch.pid)} on 127.0.0.1:{port}; origins {origins}")

        # The long download, rate-limited to last across the reloads.
        seconds = args.reloads * (args.pause + 1.0)
        rate = max(1 << 20, int(BIG / seconds))
        dl_path = tmp / "download"
        curl = procs.start("curl", ["curl", "-sS", "-o", str(dl_path), "-w", "%{http_code}", "--limit-rate",
                                    str(rate), f"http://127.0.0.1:{port}/big"], None,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # wrk for longer than the reloads take; stopped (SIGINT: it reports) once they are done.
        duration = f"{int(seconds * 3) + 30}s"
        wrks = {}
        for kind, conns, extra in (("keep-alive", args.connections, []),
                                   ("close", args.close_connections, ["-H", "Connection: close"])):
            argv = ["wrk", "-c", str(conns), "-t", "1", "-d", duration, "--timeout", "5s", "--latency",
                    "-s", str(LUA), *extra, f"http://127.0.0.1:{port}/small"]
            wrks[kind] = (argv, procs.start(f"wrk-{kind}", argv, None, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT))
        time.sleep(2)

        reloads = []
        origin = "A"
        for i in range(args.reloads):
            origin = "B" if origin == "A" else "A"
            conf.write_text(porch_conf(d, port, origins[origin], args.workers))
            t0 = time.monotonic()
            r = subprocess.run([args.porch, "reload", "-c", str(conf)], capture_output=True, text=True)
            took = time.monotonic() - t0
            status, body = fetch(port)
            reached = body.decode(errors="replace").strip() == f"origin {origins[origin]}"
            reloads.append({"n": i + 1, "rc": r.returncode, "seconds": took, "upstream": origin,
                            "new_connection_reached_it": status == 200 and reached,
                            "message": (r.stdout + r.stderr).strip()})
            log(f"reload {i + 1:2}: exit {r.returncode} in {took:.2f}s; new connection -> "
                f"{body.decode(errors='replace').strip()} ({'ok' if reached else 'WRONG'})")
            time.sleep(args.pause)
        time.sleep(2)
        results = {}
        for kind, (argv, p) in wrks.items():
            p.send_signal(2)  # SIGINT: wrk stops and prints its summary
            text = p.communicate(timeout=30)[0].decode(errors="replace")
            (out / f"wrk-{kind}.txt").write_text(f"$ {' '.join(argv)}\n{text}")
            results[kind] = wrk_result(text)
        code, err = curl.communicate(timeout=600)
        got = dl_path.read_bytes() if dl_path.exists() else b""
        download = {"status": code.decode().strip(), "curl_stderr": err.decode(errors="replace").strip(),
                    "bytes": len(got), "expected": BIG,
                    "whole": len(got) == BIG and hashlib.sha256(got).hexdigest() == big_sha}
        shutil.copy(d / "error.log", out / "porch-error.log")
        (out / "results.json").write_text(json.dumps(
            {"args": vars(args), "wrk": results, "reloads": reloads, "download": download}, indent=1))

        lines = [f"{args.reloads} reloads, workers = {args.workers}, {args.pause:g} s apart; "
                 f"upstream alternating between two origins", "",
                 "| wrk | requests | connect errors | read errors | write errors | timeouts | 4xx/5xx |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for kind, w in results.items():
            lines.append(f"| {kind} | {w['requests']:,} | {w['err_connect']} | {w['err_read']} | "
                         f"{w['err_write']} | {w['err_timeout']} | {w['err_status']} |")
        times = [r["seconds"] for r in reloads]
        lines += ["",
                  f"reloads ok: {sum(r['rc'] == 0 for r in reloads)}/{len(reloads)}; "
                  f"new connection reached the new upstream: {sum(r['new_connection_reached_it'] for r in reloads)}"
                  f"/{len(reloads)}; `porch reload` took {statistics.median(times):.2f} s median, "
                  f"{max(times):.2f} s max",
                  f"download across the reloads: HTTP {download['status']}, {download['bytes']:,} of "
                  f"{BIG:,} bytes, {'whole (sha256 matches)' if download['whole'] else 'BROKEN'}"]
        text = "\n".join(lines) + "\n"
        (out / "summary.md").write_text(text)
        print("\n" + text)
        failures = sum(w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"] + w["err_status"]
                       for w in results.values())
        ok = (failures == 0 and download["whole"]
              and all(r["rc"] == 0 and r["new_connection_reached_it"] for r in reloads))
        return 0 if ok else 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
