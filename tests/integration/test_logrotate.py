"""logrotate moving the log files while requests flow (issue 17, "Logs"): Debian's
`logrotate` runs contrib/logrotate (paths pointed at the test's files, a state file of
the test's own) in the middle of a load of concurrent HTTP/1.1 and HTTP/2 clients on
two workers; its postrotate's `porch reopen-logs` makes Porch open new files.  Every
request answered has exactly one whole line, in the moved file or in the new one.

Real processes on 127.0.0.1: Porch (conftest.py), the echo upstream, logrotate; the
clients are threads of this test (raw sockets with keep-alive, tests/integration/h2client.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

from .h2client import H2Client, StreamResult
from .helpers import PORCH_BIN, RawConn, free_port, wait_for_port, wait_until

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "logrotate"
# A whole combined line (observability/accesslog.py), request id last.
LINE = re.compile(r'^127\.0\.0\.1 - - \[[^]]+\] "GET (?P<path>/r/\S+) HTTP/(?:1\.1|2\.0)" 200 \d+ '
                  r'"-" "\S+" \d+\.\d{3} [0-9a-f]{24,}$')
H1_CLIENTS = 6
H2_CLIENTS = 3
H2_STREAMS = 4  # concurrent streams per HTTP/2 request batch


class Load:
    """Clients sending GET /r/<client>/<n> until stopped; `done` has every path answered."""

    def __init__(self, port: int, https_port: int) -> None:
        self.port, self.https_port = port, https_port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done: list[str] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._guard, args=(self._h1, f"h1-{i}")) for i in range(H1_CLIENTS)]
        self.threads += [threading.Thread(target=self._guard, args=(self._h2, f"h2-{i}")) for i in range(H2_CLIENTS)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def count(self) -> int:
        with self.lock:
            return len(self.done)

    def _guard(self, run, name: str) -> None:
        try:
            run(name)
        except BaseException as err:  # noqa: BLE001 (reported by the test)
            self.errors.append(err)
            self.stop.set()

    def _h1(self, name: str) -> None:
        n = 0
        with RawConn(self.port) as c:  # one keep-alive connection: lines from both sides of the move
            while not self.stop.is_set():
                path = f"/r/{name}/{n}"
                c.send(f"GET {path} HTTP/1.1\r\nHost: app.test\r\nUser-Agent: {name}\r\n\r\n".encode())
                assert c.read_response().status == 200, path
                with self.lock:
                    self.done.append(path)
                n += 1

    def _h2(self, name: str) -> None:
        n = 0
        with H2Client(self.https_port, timeout=20) as c:
            assert c.alpn == "h2"
            while not self.stop.is_set():
                sids = {}
                for _ in range(H2_STREAMS):
                    path = f"/r/{name}/{n}"
                    n += 1
                    sids[c.request(path, headers=[("user-agent", name)], flush=False)] = path
                c.flush()
                for sid, path in sids.items():
                    assert c.response(sid, timeout=20).status == 200, path
                with self.lock:
                    self.done.extend(sids.values())


def logrotate_config(tmp_path: Path, logs: Path, config: Path) -> Path:
    """contrib/logrotate, its paths made the test's."""
    text = CONTRIB.read_text()
    for old, new in (("/var/log/porch/*.log", f"{logs}/*.log"), ("/usr/local/bin/porch", str(PORCH_BIN)),
                     ("/etc/porch/porch.toml", str(config))):
        assert old in text, f"contrib/logrotate no longer names {old}"
        text = text.replace(old, new)
    path = tmp_path / "logrotate.conf"
    path.write_text(text)
    path.chmod(0o644)  # logrotate refuses a config others may write
    return path


def test_logrotate_moves_the_logs_under_load_and_no_line_is_lost_or_torn(upstream, porch, tmp_path):
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    up = upstream()
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    access, error = logs / "access.log", logs / "error.log"
    https_port = free_port()
    p = porch(f'[[site]]\nhosts = ["app.test"]\ntls = "internal"\nredirect_http = false\n'
              f'proxy = "{up.url}"\n', workers=2, https_port=https_port, tls="internal",
              access_log=str(access), error_log=str(error))
    wait_for_port(https_port, p.managed, what="porch https")
    p.wait_workers(2)
    conf = logrotate_config(tmp_path, logs, p.config_path)

    with Load(p.port, https_port) as load:
        assert wait_until(lambda: load.count() >= 300 or load.stop.is_set(), timeout=60), "no load"
        assert wait_until(lambda: access.exists() and access.stat().st_size > 0, timeout=10)
        rotate = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert rotate.returncode == 0, rotate.stdout + rotate.stderr
        at_rotation = load.count()
        # the new file appears when Porch reopens; requests go on into it
        assert wait_until(access.exists, timeout=10), "porch did not open a new access.log"
        assert wait_until(lambda: load.count() >= at_rotation + 300 or load.stop.is_set(), timeout=60)
    assert not load.errors, load.errors
    p.stop()  # flushes what each worker still holds, into the new files

    moved = logs / "access.log.1"
    assert moved.exists(), sorted(x.name for x in logs.iterdir())
    old_lines, new_lines = moved.read_text().splitlines(), access.read_text().splitlines()
    assert old_lines and new_lines, (len(old_lines), len(new_lines))
    for line in old_lines + new_lines:
        assert LINE.match(line), f"a torn or foreign line: {line!r}"
    logged = [LINE.match(line)["path"] for line in old_lines + new_lines]
    assert len(logged) == len(set(logged)), "a request logged twice"
    missing = set(load.done) - set(logged)
    assert not missing, f"{len(missing)} of {len(load.done)} requests have no line: {sorted(missing)[:5]}"
    assert set(logged) == set(load.done)
    # HTTP/1.1 and HTTP/2 on both sides of the move
    for lines in (old_lines, new_lines):
        assert any('" "h1-' in ln for ln in lines) and any('" "h2-' in ln for ln in lines)
    assert "log files reopened" in error.read_text()
    assert (logs / "error.log.1").exists()
