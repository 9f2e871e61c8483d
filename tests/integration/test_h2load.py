"""HTTP/2 under load: h2load (Debian nghttp2-client) through Porch over HTTPS.

h2load multiplexes many streams on few connections, the way browsers load a page:
every request must succeed, with no stream error, no connection error and no timeout,
and each must reach the upstream exactly once.  Real processes: Porch with a local-CA
site, the upstreams.py echo server, h2load.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass

import pytest

from .helpers import curl_fetch, resolve, wait_until
from .test_h2 import HOST, h2porch, tls_site  # noqa: F401  (h2porch: a fixture)


@dataclass
class H2loadResult:
    protocol: str | None
    total: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    text: str


def h2load(port: int, path: str, *args: str, timeout: float = 120) -> H2loadResult:
    """Run h2load at https://app.test:PORT/PATH (SNI app.test, connecting to 127.0.0.1)."""
    proc = subprocess.run(["h2load", *args, f"--connect-to=127.0.0.1:{port}",
                           f"https://{HOST}:{port}{path}"],
                          capture_output=True, text=True, timeout=timeout)
    text = proc.stdout + proc.stderr
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    assert m, f"h2load exited {proc.returncode} without its summary:\n{text}"
    codes = re.search(r"status codes: (\d+) 2xx", text)
    proto = re.search(r"Application protocol: (\S+)", text)
    return H2loadResult(proto.group(1) if proto else None, *map(int, m.groups()),
                        int(codes.group(1)) if codes else 0, text)


@pytest.fixture
def h2site(h2porch, upstream):
    up = upstream()
    return h2porch(tls_site(up.url)), up


def test_h2load_20000_multiplexed_requests_all_succeed(h2site):
    p, up = h2site
    before = up.stats()["requests"]
    n = 20000
    r = h2load(p.https_port, "/load", "-n", str(n), "-c", "10", "-m", "10")
    assert r.protocol == "h2", r.text
    assert (r.total, r.succeeded, r.failed, r.errored, r.timeout) == (n, n, 0, 0, 0), r.text
    assert r.status_2xx == n, r.text
    assert up.stats()["requests"] - before == n  # each exactly once, none lost or repeated
    lines = p.access_log_lines(n, timeout=5)
    h2_lines = [ln for ln in lines if '"GET /load HTTP/2.0" 200' in ln]
    assert len(h2_lines) == n, (len(h2_lines), lines[-3:])


def test_h2load_posts_with_bodies_larger_than_the_stream_window(h2site, tmp_path):
    """Uploads of 300 KiB each, more than the 256 KiB stream window Porch grants: every
    body must be streamed to the upstream under flow control, 10 at a time."""
    p, up = h2site
    body = os.urandom(300 * 1024)
    data = tmp_path / "body.bin"
    data.write_bytes(body)
    before = up.stats()["requests"]
    n = 300
    r = h2load(p.https_port, "/upload", "-n", str(n), "-c", "3", "-m", "10", "-d", str(data))
    assert r.protocol == "h2", r.text
    assert (r.succeeded, r.failed, r.errored, r.timeout) == (n, 0, 0, 0), r.text
    assert r.status_2xx == n, r.text
    assert up.stats()["requests"] - before == n
    # The bytes themselves: the same body over curl --http2 arrives intact upstream.
    res = curl_fetch(f"https://{HOST}:{p.https_port}/upload", "--http2", "-k",
                     "--data-binary", f"@{data}", *resolve(HOST, p.https_port))
    assert res.rc == 0 and res.status == 200, res.stderr
    echo = res.json()
    assert echo["method"] == "POST" and echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert wait_until(lambda: sum('"POST /upload HTTP/2.0" 200' in ln
                                  for ln in p.access_log_lines(n + 1)) == n + 1, timeout=5)
