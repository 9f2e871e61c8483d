"""Plumbing for the integration tests: processes by pid, free ports, raw HTTP/1.1 on sockets.

Everything here talks to real processes over 127.0.0.1; nothing imports Porch.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PORCH_BIN = VENV_BIN / "porch"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
UPSTREAMS = HERE / "upstreams.py"

MiB = 1024 * 1024
GiB = 1024 * MiB


# -- ports and processes -------------------------------------------------------------


def free_port() -> int:
    """A port nobody listens on right now (bind port 0, read it back, let it go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_port() -> int:
    """A port where connecting is refused (bound, never listening, released)."""
    return free_port()


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """All descendants of `pid` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Managed:
    """A child process we started; stopped by its pid (and its descendants' pids)."""

    def __init__(self, argv: list[str], *, cwd: Path, name: str):
        self.name = name
        self.stdout_path = cwd / f"{name}.stdout"
        self.stderr_path = cwd / f"{name}.stderr"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def output(self) -> str:
        text = ""
        for p in (self.stdout_path, self.stderr_path):
            try:
                text += f"--- {p.name}\n" + p.read_text(errors="replace")[-4000:]
            except OSError:
                pass
        return text

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and whatever it started, each by pid; reap."""
        kids = children_of(self.pid) if self.running() else []
        for pid in [self.pid, *kids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()
        self._err.close()


class Registry:
    """Every process a test (or module) started, killed at teardown."""

    def __init__(self) -> None:
        self.items: list[Managed] = []

    def start(self, argv: list[str], *, cwd: Path, name: str) -> Managed:
        m = Managed(argv, cwd=cwd, name=name)
        self.items.append(m)
        return m

    def close(self) -> None:
        for m in reversed(self.items):
            m.kill()


def wait_for_port(port: int, managed: Managed, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port):
            return
        if not managed.running():
            raise AssertionError(f"{what or managed.name} exited with {managed.proc.returncode} "
                                 f"before listening on {port}\n{managed.output()}")
        time.sleep(0.03)
    raise AssertionError(f"{what or managed.name} not listening on {port} after {timeout}s\n"
                         f"{managed.output()}")


# -- upstream ------------------------------------------------------------------------


class Upstream:
    """A running `upstreams.py`; over TLS with `tls=(cert, key)` (and `client_ca`: client
    certificates required, `client_cert=(cert, key)` is what `stats()` presents)."""

    def __init__(self, registry: Registry, workdir: Path, mode: str = "echo", *,
                 tls: tuple[Path, Path] | None = None, client_ca: Path | None = None,
                 client_cert: tuple[Path, Path] | None = None):
        self.mode = mode
        self.port = free_port()
        self.tls = tls
        self.client_cert = client_cert
        argv = [PYTHON, str(UPSTREAMS), "--port", str(self.port), "--mode", mode]
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        if client_ca:
            argv += ["--tls-client-ca", str(client_ca)]
        self.managed = registry.start(argv, cwd=workdir, name=f"upstream-{self.port}-{mode}")
        self.pid = self.managed.pid
        wait_for_port(self.port, self.managed, what=f"upstream ({mode})")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        if self.tls:
            import ssl

            ctx = ssl._create_unverified_context()  # our own test upstream: stats only
            if self.client_cert:
                ctx.load_cert_chain(*self.client_cert)
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/__stats", headers={"Connection": "close"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()


# -- porch ---------------------------------------------------------------------------


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


class Porch:
    """A running `porch run -c FILE` on a free port of 127.0.0.1."""

    def __init__(self, registry: Registry, workdir: Path, config_text: str, **porch_keys):
        self.workdir = workdir
        self.port = porch_keys.get("http_port") or free_port()
        self.access_log_path = workdir / "access.log"
        self.error_log_path = workdir / "error.log"
        keys = {
            "http_port": self.port,
            "bind": ["127.0.0.1"],
            "state_dir": str(workdir / "state"),
            "access_log": str(self.access_log_path),
            "error_log": str(self.error_log_path),
            # Plain HTTP unless a test asks for TLS: sites on local names (app.test)
            # would otherwise get the local CA and redirect to https.  A site's own
            # `tls` wins; tls=None here leaves the [porch] default out.
            "tls": "off",
        }
        keys.update(porch_keys)
        self.keys = keys
        self.config_path = workdir / "porch.toml"
        self.write_config(config_text)
        self.managed = registry.start([str(PORCH_BIN), "run", "-c", str(self.config_path)],
                                      cwd=workdir, name="porch")
        self.pid = self.managed.pid
        wait_for_port(self.port, self.managed, what="porch")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, config_text: str, **porch_keys) -> None:
        """(Re)write the config file: the `[porch]` keys given at start, updated by
        `porch_keys` (None removes one), then `config_text`."""
        self.keys.update(porch_keys)
        head = "[porch]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in self.keys.items()
                                      if v is not None)
        self.config_path.write_text(head + "\n" + config_text)

    def reload(self, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """`porch reload -c` this config; the finished process (returncode, stdout, stderr)."""
        return subprocess.run([str(PORCH_BIN), "reload", "-c", str(self.config_path)],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)

    def workers(self) -> list[int]:
        """The pids of the worker processes (the supervisor's children)."""
        return children_of(self.pid)

    def wait_workers(self, count: int, timeout: float = 15.0) -> list[int]:
        """Wait until exactly `count` workers run and each accepts (the supervisor logs
        "porch serving" once they do); their pids."""
        self.error_log_text(wait_for="porch serving", timeout=timeout)
        if not wait_until(lambda: len(self.workers()) == count, timeout=timeout):
            raise AssertionError(f"expected {count} workers, found {self.workers()}\n{self.managed.output()}")
        return self.workers()

    def pids(self) -> list[int]:
        return [self.pid, *children_of(self.pid)]

    def access_log_lines(self, count: int = 1, timeout: float = 3.0) -> list[str]:
        """The access log's lines, waiting (Porch may flush ~1 s late) until `count` exist."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines = self.access_log_path.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            lines = [ln for ln in lines if ln.strip()]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def error_log_mark(self) -> int:
        """The error log's current size: pass it as `since` to see only what comes after."""
        try:
            return self.error_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def error_log_text(self, wait_for: str | None = None, timeout: float = 3.0,
                       since: int = 0) -> str:
        """The error log (from byte `since`); with `wait_for` (a regex, case-insensitive),
        poll until it matches."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.error_log_path, "rb") as f:
                    f.seek(since)
                    text = f.read().decode(errors="replace")
            except FileNotFoundError:
                text = ""
            if wait_for is None or re.search(wait_for, text, re.I) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def rss_kib(self) -> int:
        """VmRSS of Porch's largest process (the one serving, whatever the process model)."""
        return max(rss_kib(p) for p in self.pids())

    def fd_count(self) -> int:
        """Open file descriptors over Porch's processes."""
        return sum(fd_count(p) for p in self.pids())

    def signal(self, sig: int = signal.SIGTERM) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.managed.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then Porch must exit 0 within `timeout`."""
        self.signal(signal.SIGTERM)
        try:
            code = self.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"porch still running {timeout}s after SIGTERM") from None
        assert code == 0, f"porch exited {code} after SIGTERM\n{self.managed.output()}"


class RSSSampler:
    """Samples Porch's RSS every `interval` seconds in a thread; `.peak_kib` is the max."""

    def __init__(self, porch: Porch, interval: float = 0.05):
        self.porch = porch
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.porch.rss_kib())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# -- clients -------------------------------------------------------------------------


def curl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Debian's curl, silent but showing errors; text output."""
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout,
                          text=True, errors="replace")


def resolve(host: str, port: int) -> list[str]:
    """curl arguments so that `http://HOST:PORT/` reaches 127.0.0.1 with that Host."""
    return ["--resolve", f"{host}:{port}:127.0.0.1"]


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this one

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


class ClosedBeforeResponse(Exception):
    """The peer closed (or reset) the connection before a complete response head."""


class RawConn:
    """One client TCP connection speaking hand-written HTTP/1.1, for exact bytes."""

    def __init__(self, port: int, timeout: float = 5.0, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise ClosedBeforeResponse(f"closed; had {self.buf[:200]!r}")
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ClosedBeforeResponse(f"closed after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, *, head_request: bool = False, skip_interim: bool = True) -> Response:
        """Read one response (1xx interim ones are noted and skipped)."""
        interim = []
        while True:
            head = self._read_until(b"\r\n\r\n").decode("latin-1")
            lines = head[:-4].split("\r\n")
            version, status, *reason = lines[0].split(" ", 2)
            headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ln]
            resp = Response(version, int(status), reason[0] if reason else "", headers)
            if 100 <= resp.status < 200 and resp.status != 101 and skip_interim:
                interim.append(resp.status)
                continue
            resp.interim = interim
            break
        if head_request or resp.status in (204, 304) or 100 <= resp.status < 200:
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            resp.body = self._read_chunked()
        elif resp.header("content-length") is not None:
            resp.body = self._read_exact(int(resp.header("content-length")))
        else:
            resp.body = self.read_until_closed()
        return resp

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0].strip(), 16)
            if size == 0:
                while self._read_until(b"\r\n") != b"\r\n":
                    pass
                return bytes(out)
            out += self._read_exact(size)
            self._read_exact(2)

    def read_until_closed(self, timeout: float | None = None) -> bytes:
        """Everything until the peer closes; raises socket.timeout if it does not."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True if the peer closes within `timeout` (with nothing more sent)."""
        self.sock.settimeout(timeout)
        try:
            self.read_until_closed()
        except (socket.timeout, TimeoutError):
            return False
        return True


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[Response | None, bytes]:
    """Send `data` on a new connection; return (first response or None, bytes after it).

    Reads until the peer closes or `timeout` passes with nothing new.
    """
    with RawConn(port, timeout=timeout) as c:
        c.send(data)
        try:
            resp = c.read_response()
        except (ClosedBeforeResponse, socket.timeout, TimeoutError):
            return None, c.buf
        try:
            rest = c.read_until_closed()
        except (socket.timeout, TimeoutError):
            rest = c.buf
        return resp, rest


def get(path: str, host: str = "app.test", extra: str = "", version: str = "HTTP/1.1") -> bytes:
    """A request head as bytes."""
    return f"GET {path} {version}\r\nHost: {host}\r\n{extra}\r\n".encode("latin-1")


def pattern_block(size: int = MiB) -> bytes:
    """`size` bytes of upstreams.py's pattern starting at offset 0 (size multiple of 256)."""
    return bytes(range(256)) * (size // 256)


@dataclass
class CurlResult:
    rc: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stderr: str
    elapsed: float

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


def curl_fetch(url: str, *args: str, timeout: float = 60.0) -> CurlResult:
    """Run curl on `url`; the final response's status, headers and body, and curl's exit code."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        head_file, body_file = Path(d) / "head", Path(d) / "body"
        start = time.monotonic()
        proc = subprocess.run(["curl", "-sS", "-D", str(head_file), "-o", str(body_file),
                               "-w", "%{http_code}", *args, url],
                              capture_output=True, timeout=timeout)
        elapsed = time.monotonic() - start
        heads = head_file.read_bytes().decode("latin-1") if head_file.exists() else ""
        body = body_file.read_bytes() if body_file.exists() else b""
    blocks = [b for b in heads.split("\r\n\r\n") if b.strip()]
    headers = []
    if blocks:
        headers = [tuple(x.strip() for x in ln.split(":", 1))
                   for ln in blocks[-1].split("\r\n")[1:] if ":" in ln]
    status = int(proc.stdout.decode() or 0)
    return CurlResult(proc.returncode, status, headers, body,
                      proc.stderr.decode(errors="replace"), elapsed)


def assert_short_error_body(body: bytes) -> None:
    """Porch's own error responses: a short, non-empty body (no stack trace, no big page)."""
    assert 0 < len(body) <= 1024, f"error body of {len(body)} bytes: {body[:200]!r}"


def site(proxy: str, extra: str = "", host: str = "app.test") -> str:
    """A porch.toml [[site]] for `host` proxying to `proxy`, with `extra` lines."""
    return f'[[site]]\nhosts = ["{host}"]\nproxy = "{proxy}"\n{extra}'


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
