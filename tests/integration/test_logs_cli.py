"""Logs and CLI: the access log (combined, json, off, stdout), the error log line for a
502, `porch version`, `porch check` on good and bad files, and graceful stop on SIGTERM
and SIGINT (drain in-flight requests, refuse new connections, exit 0, `shutdown_timeout`).

Real processes on 127.0.0.1, each stopped by pid by the fixtures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from .helpers import (
    PORCH_BIN,
    PYTHON,
    ClosedBeforeResponse,
    RawConn,
    curl_fetch,
    free_port,
    get,
    port_accepts,
    refused_port,
    site,
    wait_until,
)


def porch_cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(PORCH_BIN), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def stop_and_read_access_log(p) -> list[str]:
    """SIGTERM Porch (it must exit 0; the log is flushed at exit), then the log's lines."""
    p.stop()
    try:
        return [ln for ln in p.access_log_path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


# -- access log: combined ------------------------------------------------------------

# nginx's combined format, plus the request time in seconds with millisecond resolution
# and the request id (X-Request-ID).
COMBINED = re.compile(
    r'^(?P<ip>\S+) - (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" '
    r'"(?P<agent>[^"]*)" (?P<rt>\d+\.\d{3}) (?P<request_id>[0-9a-f]{24})$'
)


def parse_combined(line: str) -> dict:
    m = COMBINED.match(line)
    assert m, f"not a combined log line (plus request time): {line!r}"
    return m.groupdict()


def test_combined_access_log_one_line_per_request(upstream, porch):
    up = upstream()
    p = porch(site(up.url), access_log_format="combined")
    r1 = curl_fetch(f"{p.url}/some/page?x=1&y=2", "-H", "Host: app.test",
                    "-A", "TestAgent/1.0", "-e", "http://ref.example/from")
    r2 = curl_fetch(f"{p.url}/status/404", "-H", "Host: app.test")
    r3 = curl_fetch(f"{p.url}/slow?delay=0.3", "-H", "Host: app.test", "-A", "Slow/2")
    assert (r1.status, r2.status, r3.status) == (200, 404, 200)

    lines = stop_and_read_access_log(p)
    assert len(lines) == 3, "expected one line per request:\n" + "\n".join(lines)
    first, second, third = (parse_combined(ln) for ln in lines)

    assert first["ip"] == "127.0.0.1"
    assert first["user"] == "-"
    assert first["request"] == "GET /some/page?x=1&y=2 HTTP/1.1"
    assert first["status"] == "200"
    # $body_bytes_sent: the body, not the head
    assert int(first["bytes"]) == len(r1.body), (first, len(r1.body))
    assert first["referer"] == "http://ref.example/from"
    assert first["agent"] == "TestAgent/1.0"
    assert 0 <= float(first["rt"]) < 2

    assert second["request"] == "GET /status/404 HTTP/1.1"
    assert second["status"] == "404"
    assert int(second["bytes"]) == len(r2.body)
    assert second["referer"] == "-"
    assert second["agent"].startswith("curl/")

    assert third["request"] == "GET /slow?delay=0.3 HTTP/1.1"
    assert third["agent"] == "Slow/2"
    assert 0.3 <= float(third["rt"]) < 2, f"request time {third['rt']} for a 0.3 s upstream"


def test_combined_access_log_escapes_quotes_and_control_bytes(upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    with RawConn(p.port) as c:
        c.send(b'GET /x HTTP/1.1\r\nHost: app.test\r\nUser-Agent: evil" 200 0 "\xff\r\n'
               b"Referer: a\\b\r\n\r\n")
        assert c.read_response().status == 200
    lines = stop_and_read_access_log(p)
    assert len(lines) == 1, lines
    entry = parse_combined(lines[0])  # a quote in a field must not split the line
    assert entry["agent"] == 'evil\\x22 200 0 \\x22\\xFF', entry
    assert entry["referer"] == "a\\x5Cb", entry


def test_combined_access_log_counts_body_bytes_of_porchs_own_errors(porch):
    """nginx's combined format logs $body_bytes_sent, also for its own error pages."""
    p = porch(site(f"http://127.0.0.1:{refused_port()}"))
    r = curl_fetch(f"{p.url}/", "-H", "Host: app.test")
    assert r.status == 502
    lines = stop_and_read_access_log(p)
    assert len(lines) == 1, lines
    entry = parse_combined(lines[0])
    assert entry["status"] == "502"
    assert int(entry["bytes"]) == len(r.body), (
        f"logged {entry['bytes']} bytes for a 502 whose body is {len(r.body)} bytes: {lines[0]!r}")


def test_access_log_off_writes_nothing(upstream, porch):
    up = upstream()
    p = porch(site(up.url), access_log="off")
    for _ in range(3):
        assert curl_fetch(f"{p.url}/", "-H", "Host: app.test").status == 200
    p.stop()
    assert not p.access_log_path.exists()
    assert not (p.workdir / "off").exists(), "access_log = \"off\" wrote a file named off"
    stdout = p.managed.stdout_path.read_text(errors="replace")
    assert "GET / HTTP/1.1" not in stdout, stdout


def test_access_log_dash_goes_to_stdout(upstream, porch):
    up = upstream()
    p = porch(site(up.url), access_log="-")
    assert curl_fetch(f"{p.url}/to-stdout", "-H", "Host: app.test").status == 200
    p.stop()
    stdout = p.managed.stdout_path.read_text(errors="replace")
    lines = [ln for ln in stdout.splitlines() if "/to-stdout" in ln]
    assert len(lines) == 1, stdout
    assert parse_combined(lines[0])["status"] == "200"


# -- access log: json ----------------------------------------------------------------


def test_json_access_log_fields(upstream, porch):
    up = upstream()
    dead = f"http://127.0.0.1:{refused_port()}"
    config = (f'[[site]]\nhosts = ["app.test"]\nproxy = "{up.url}"\n'
              f'  [[site.route]]\n  path = "/dead/"\n  proxy = "{dead}"\n')
    p = porch(config, access_log_format="json")
    body = b"b" * 5000
    ok = curl_fetch(f"{p.url}/slow?delay=0.3", "-H", "Host: app.test", "--data-binary", body.decode(),
                    "-A", "JsonAgent/1", "-e", "http://ref.example/")
    bad = curl_fetch(f"{p.url}/dead/thing", "-H", "Host: app.test")
    assert (ok.status, bad.status) == (200, 502)

    lines = stop_and_read_access_log(p)
    assert len(lines) == 2, lines
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"access log line is not one JSON object: {line!r}")
    first, second = records

    assert first["client_ip"] == "127.0.0.1"
    assert first["site"] == first["host"] == "app.test"
    assert first["method"] == "POST"
    assert first["target"] == "/slow?delay=0.3"
    assert first["protocol"] == "HTTP/1.1"
    assert first["route"] == "/"
    assert first["upstream"] == up.url
    assert first["status"] == 200
    assert first["upstream_status"] == 200
    assert first["bytes_in"] >= len(body), first
    assert len(ok.body) <= first["bytes_out"] < len(ok.body) + 4096, (first, len(ok.body))
    assert first["user_agent"] == "JsonAgent/1"
    assert first["referer"] == "http://ref.example/"
    assert first["error"] is None
    # durations, in seconds from the start of the request
    assert 0.3 <= first["duration"] < 2, first
    assert 0 <= first["upstream_connect_time"] <= first["upstream_header_time"], first
    assert 0.3 <= first["upstream_header_time"] <= first["duration"], first
    assert 0.3 <= first["upstream_time"] <= first["duration"], first

    assert second["host"] == "app.test"
    assert second["target"] == "/dead/thing"
    assert second["route"] == "/dead/"
    assert second["upstream"] == dead
    assert second["status"] == 502
    assert not second["upstream_status"], second
    assert second["bytes_in"] == 0
    assert isinstance(second["bytes_out"], int)
    assert 0 <= second["duration"] < 2
    assert second["upstream_header_time"] is None
    assert second["error"] and "refused" in second["error"].lower(), second


# -- error log -----------------------------------------------------------------------


def test_error_log_one_line_for_502_naming_site_upstream_and_cause(upstream, porch):
    dead = f"http://127.0.0.1:{refused_port()}"
    p = porch(site(dead))
    mark = p.error_log_mark()
    r = curl_fetch(f"{p.url}/where?x=1", "-H", "Host: app.test")
    assert r.status == 502
    text = p.error_log_text(wait_for="refused", since=mark)
    time.sleep(0.2)  # a second line for the same request would come right after the first
    text = p.error_log_text(since=mark)
    errors = [ln for ln in text.splitlines() if "[error]" in ln]
    assert len(errors) == 1, f"expected one error line for one 502:\n{text}"
    line = errors[0]
    assert "refused" in line.lower(), line
    assert "app.test" in line, line
    assert dead in line, line
    assert "/where?x=1" in line, line
    assert "127.0.0.1" in line, line


# -- porch version / check -----------------------------------------------------------


def test_porch_version():
    r = porch_cli("version")
    assert r.returncode == 0, r.stderr
    expected = subprocess.run([PYTHON, "-c", "import porch; print(porch.__version__)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    first, tls = r.stdout.strip().splitlines()
    assert re.fullmatch(r"porch \d+\.\d+\.\d+\S* \((compiled core|pure Python)\)", first), r.stdout
    assert expected in first
    # The suite tests what ships: the hot path compiled (tests/conftest.py builds it),
    # TLS records on Porch's own transport (libssl-dev is installed by scripts/test.sh).
    pure = os.environ.get("PORCH_PURE_PYTHON") == "1"
    assert ("(pure Python)" if pure else "(compiled core)") in first
    assert tls == "TLS records: Porch's transport (server/tls_transport.pyx)", r.stdout
    # PORCH_UVLOOP_TLS=1 says the other one, and why
    r = subprocess.run([str(PORCH_BIN), "version"], capture_output=True, text=True, check=True,
                       env={**os.environ, "PORCH_UVLOOP_TLS": "1"})
    assert r.stdout.splitlines()[1] == "TLS records: uvloop's SSLProtocol (PORCH_UVLOOP_TLS=1)", r.stdout


GOOD = """\
[porch]
http_port = {port}
bind = ["127.0.0.1"]
access_log = "off"

[[site]]
hosts = ["app.test", "www.app.test"]
proxy = "http://127.0.0.1:9001"
max_body = "20M"

[[site]]
hosts = ["dav.test"]
  [[site.route]]
  path = "/radicale/"
  proxy = "http://localhost:5232"
  strip_prefix = true
  [[site.route]]
  path = "/"
  proxy = ["http://127.0.0.1:9002", "http://127.0.0.1:9003"]

[[site]]
proxy = "http://127.0.0.1:9004"
"""


def test_check_good_file_prints_sites_hosts_routes_upstreams(tmp_path):
    path = tmp_path / "good.toml"
    port = free_port()
    path.write_text(GOOD.replace("{port}", str(port)))
    r = porch_cli("check", "-c", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "valid" in out
    for word in ("app.test", "www.app.test", "dav.test", "/radicale/", "http://127.0.0.1:9001",
                 "http://localhost:5232", "http://127.0.0.1:9002", "http://127.0.0.1:9003",
                 "http://127.0.0.1:9004", "strip_prefix", "20M", "catch-all"):
        assert word in out, f"{word!r} missing from porch check output:\n{out}"
    assert re.search(r"/radicale/\s*->\s*http://localhost:5232", out), out
    # each site appears once, in file order
    assert out.index("app.test") < out.index("dav.test") < out.index("catch-all"), out
    assert not port_accepts(port), "porch check must not start serving"


BAD_CASES = {
    "bad-proxy-url": (
        ('[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9001"\n\n'
         '[[site]]\nhosts = ["b.test"]\n  [[site.route]]\n  path = "/x/"\n  proxy = "htp://x"\n'),
        [r'site\[1\]\.route\[0\]\.proxy: "htp://x" is not an http:// or https:// URL'],
    ),
    "unknown-key": (
        '[[site]]\nhosts = ["a.test"]\nprxy = "http://127.0.0.1:9001"\n',
        [r"site\[0\]\.prxy: unknown key", r"did you mean proxy\?"],
    ),
    "bad-size": (
        '[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9001"\nmax_body = "20Q"\n',
        [r'site\[0\]\.max_body: "20Q" is not a size', r"20M"],
    ),
    "bad-port": (
        '[porch]\nhttp_port = 70000\n[[site]]\nproxy = "http://127.0.0.1:9001"\n',
        [r"porch\.http_port: 70000 is out of range"],
    ),
    "toml-syntax": (
        '[[site]]\nhosts = ["a.test"\nproxy = "http://127.0.0.1:9001"\n',
        [r"bad\.toml", r"line \d+"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_check_bad_file_exits_1_naming_key_and_value(case, tmp_path):
    text, patterns = BAD_CASES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = porch_cli("check", "-c", str(path))
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout}{r.stderr}"
    for pattern in patterns:
        assert re.search(pattern, r.stderr), f"{pattern!r} not in stderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    assert "configuration is valid" not in r.stdout, r.stdout


def test_check_reports_every_problem_in_one_run(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[site]]\nhosts = ["a.test"]\nprxy = "http://127.0.0.1:9001"\nproxy = "http://127.0.0.1:1"\n'
        'max_body = "20Q"\n\n'
        '[[site]]\nhosts = ["b.test"]\n  [[site.route]]\n  path = "/x/"\n  proxy = "htp://x"\n')
    r = porch_cli("check", "-c", str(path))
    assert r.returncode == 1
    for pattern in (r"site\[0\]\.prxy: .*did you mean proxy", r'site\[0\]\.max_body: "20Q"',
                    r'site\[1\]\.route\[0\]\.proxy: "htp://x"'):
        assert re.search(pattern, r.stderr), f"{pattern!r} not in stderr:\n{r.stderr}"


def test_check_missing_file(tmp_path):
    path = tmp_path / "nowhere.toml"
    r = porch_cli("check", "-c", str(path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(path) in r.stderr
    assert "no such file" in r.stderr.lower() or "cannot read" in r.stderr.lower(), r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_run_bad_file_exits_1_without_serving(tmp_path):
    path = tmp_path / "bad.toml"
    port = free_port()
    path.write_text(f'[porch]\nhttp_port = {port}\nbind = ["127.0.0.1"]\n'
                    '[[site]]\nhosts = ["a.test"]\nproxy = "htp://x"\n')
    r = porch_cli("run", "-c", str(path), timeout=10)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r'site\[0\]\.proxy: "htp://x"', r.stderr), r.stderr
    assert not port_accepts(port)


# -- graceful stop -------------------------------------------------------------------


def start_slow_request(p, up, delay: float) -> RawConn:
    """A request to the upstream's /slow, sent and seen by the upstream (in flight)."""
    c = RawConn(p.port, timeout=delay + 10)
    c.send(get(f"/slow?delay={delay}"))
    assert wait_until(lambda: up.stats()["requests"] >= 1, timeout=5), "request never reached upstream"
    return c


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_request_and_exits_0(sig, upstream, porch):
    up = upstream()
    p = porch(site(up.url))
    c = start_slow_request(p, up, delay=1.5)
    t_signal = time.monotonic()
    p.signal(sig)

    # Stop accepting: new connections are refused soon after the signal ...
    assert wait_until(lambda: not port_accepts(p.port), timeout=1.0), \
        "porch still accepts new connections 1 s after the signal"
    assert p.managed.running(), "porch exited with a request in flight"

    # ... while the request in flight completes, whole.
    r = c.read_response()
    t_response = time.monotonic()
    assert r.status == 200
    doc = r.json()
    assert doc["path"] == "/slow"
    assert t_response - t_signal >= 1.0  # it really was in flight across the signal
    c.close()

    code = p.wait(timeout=5)
    assert code == 0, f"porch exited {code}\n{p.managed.output()}"
    assert time.monotonic() - t_response < 2.5, "porch lingered after the last request finished"
    lines = [ln for ln in p.access_log_path.read_text().splitlines() if "/slow" in ln]
    assert len(lines) == 1 and '" 200 ' in lines[0], lines


def test_sigterm_with_idle_keepalive_connection_exits_at_once(upstream, porch):
    up = upstream()
    p = porch(site(up.url))  # shutdown_timeout default: 30 s
    with RawConn(p.port, timeout=5) as c:
        c.send(get("/"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert c.closed_by_peer(timeout=3), "idle keep-alive connection not closed at shutdown"
    code = p.wait(timeout=5)
    assert code == 0
    assert time.monotonic() - t0 < 2, "porch waited on an idle connection"


def test_shutdown_timeout_cuts_longer_requests(upstream, porch):
    up = upstream()
    p = porch(site(up.url), shutdown_timeout="1s")
    c = start_slow_request(p, up, delay=8)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    try:
        code = p.wait(timeout=6)
    except subprocess.TimeoutExpired:
        pytest.fail("porch still running 6 s after SIGTERM with shutdown_timeout = 1s")
    elapsed = time.monotonic() - t0
    assert code == 0, f"porch exited {code}\n{p.managed.output()}"
    assert 0.8 <= elapsed < 3, f"exited {elapsed:.2f}s after SIGTERM with shutdown_timeout = 1s"
    try:
        r = c.read_response()
    except ClosedBeforeResponse:
        pass  # cut: the connection closed without a response
    else:
        assert r.status != 200, "a request longer than shutdown_timeout was not cut"
    c.close()


def test_request_cut_at_shutdown_is_still_access_logged(upstream, porch):
    up = upstream()
    p = porch(site(up.url), shutdown_timeout="0.5s")
    c = start_slow_request(p, up, delay=8)
    p.signal(signal.SIGTERM)
    assert p.wait(timeout=6) == 0
    c.close()
    lines = [ln for ln in p.access_log_path.read_text().splitlines() if ln.strip()] \
        if p.access_log_path.exists() else []
    assert any("/slow?delay=8" in ln for ln in lines), \
        f"no access log line for the request cut at shutdown: {lines}"


def test_sigusr1_reopens_the_log_files_after_logrotate_moved_them(upstream, porch):
    """logrotate's `postrotate kill -USR1 <pid>` (nginx's reopen): lines before the move
    stay in the moved files, lines after it go to new files by the configured names,
    from every worker."""
    up = upstream()
    p = porch(site(up.url), workers=2)
    p.wait_workers(2)
    assert curl_fetch(f"{p.url}/before", "-H", "Host: app.test").status == 200
    assert wait_until(lambda: "/before" in p.access_log_path.read_text(), timeout=5)
    moved_access = p.access_log_path.with_suffix(".log.1")
    moved_error = p.error_log_path.with_suffix(".log.1")
    os.rename(p.access_log_path, moved_access)
    os.rename(p.error_log_path, moved_error)
    p.signal(signal.SIGUSR1)
    assert wait_until(p.access_log_path.exists, timeout=5) and wait_until(p.error_log_path.exists, timeout=5)
    for i in range(20):  # new connections: the kernel spreads them over both workers
        assert curl_fetch(f"{p.url}/after/{i}", "-H", "Host: app.test").status == 200
    p.stop()
    new_lines = p.access_log_path.read_text().splitlines()
    assert len(new_lines) == 20 and all("/after/" in ln for ln in new_lines)
    assert "/before" in moved_access.read_text() and "/after/" not in moved_access.read_text()
    assert "log files reopened" in p.error_log_path.read_text()
    assert "porch serving" in moved_error.read_text()
