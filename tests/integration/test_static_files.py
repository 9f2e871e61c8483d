"""`root` (policies/root.py) with real clients: static files over HTTP/1.1 (raw sockets,
curl) and HTTP/2 (curl --http2), traversal attempts as raw bytes, a symlink out of the
root, a 50 MB file streamed with bounded memory, and try_files falling back to a real
upstream."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from .helpers import MiB, RawConn, RSSSampler, curl_fetch, free_port, resolve, wait_for_port, wait_until

HOST = "app.test"
SECRET = b"top secret outside the root\n"


@pytest.fixture
def www(tmp_path):
    """A document root with an index, typed files, a subdirectory, an empty directory, a
    symlink inside and one pointing outside, next to a secret file outside the root."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "sub" / "index.html").write_text("<h1>sub</h1>\n")
    (root / "style.css").write_text("body { color: red }\n")
    (root / "app.js").write_text("console.log(1)\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 400)  # 100 KiB: streamed, not read whole
    (root / "a b.txt").write_text("spaced\n")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "out.txt")
    os.symlink(root / "style.css", root / "alias.css")
    return root


def site_config(root, extra: str = "") -> str:
    return f'[[site]]\nhosts = ["{HOST}"]\nroot = "{root}"\n{extra}'


def ask(port: int, target: bytes, extra: bytes = b"", method: bytes = b"GET"):
    with RawConn(port) as c:
        c.send(method + b" " + target + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n" + extra + b"\r\n")
        return c.read_response(head_request=method == b"HEAD")


def test_files_types_index_and_directories_over_http1(porch, www):
    p = porch(site_config(www))
    r = ask(p.port, b"/")
    assert (r.status, r.body, r.header("Content-Type")) == (200, b"<h1>home</h1>\n", "text/html; charset=utf-8")
    assert ask(p.port, b"/style.css").header("Content-Type") == "text/css; charset=utf-8"
    assert ask(p.port, b"/data.bin").header("Content-Type") == "application/octet-stream"
    assert ask(p.port, b"/a%20b.txt").body == b"spaced\n"
    assert ask(p.port, b"/alias.css").body == b"body { color: red }\n"  # a symlink inside: followed
    r = ask(p.port, b"/sub?x=1")
    assert (r.status, r.header("Location")) == (301, "/sub/?x=1")  # nginx: the directory's slash
    assert ask(p.port, b"/sub/").body == b"<h1>sub</h1>\n"
    assert ask(p.port, b"/empty/").status == 403  # no index: forbidden, never a listing
    assert ask(p.port, b"/missing.html").status == 404
    assert ask(p.port, b"/style.css/").status == 404
    r = ask(p.port, b"/style.css", method=b"POST")
    assert (r.status, r.header("Allow")) == (405, "GET, HEAD")
    r = ask(p.port, b"/data.bin", method=b"HEAD")
    assert (r.status, r.header("Content-Length"), r.body) == (200, str(400 * 256), b"")
    r = ask(p.port, b"/data.bin")
    assert r.body == bytes(range(256)) * 400 and r.header("Accept-Ranges") == "bytes"


def test_conditions_and_ranges_over_http1(porch, www):
    p = porch(site_config(www))
    first = ask(p.port, b"/data.bin")
    tag, modified = first.header("ETag"), first.header("Last-Modified")
    st = os.stat(www / "data.bin")
    assert tag == f'"{int(st.st_mtime):x}-{st.st_size:x}"'  # nginx's form
    r = ask(p.port, b"/data.bin", f"If-None-Match: {tag}\r\n".encode())
    assert (r.status, r.body, r.header("ETag"), r.header("Content-Length")) == (304, b"", tag, None)
    r = ask(p.port, b"/data.bin", f"If-Modified-Since: {modified}\r\n".encode())
    assert r.status == 304
    assert ask(p.port, b"/data.bin", b'If-None-Match: "other"\r\n').status == 200
    r = ask(p.port, b"/data.bin", b"Range: bytes=256-511\r\n")
    assert (r.status, r.header("Content-Range"), r.body) == (206, "bytes 256-511/102400", bytes(range(256)))
    r = ask(p.port, b"/data.bin", b"Range: bytes=-3\r\n")
    assert (r.status, r.body) == (206, bytes([253, 254, 255]))
    r = ask(p.port, b"/data.bin", b"Range: bytes=200000-\r\n")
    assert (r.status, r.header("Content-Range")) == (416, "bytes */102400")
    r = ask(p.port, b"/data.bin", b"Range: bytes=0-1,5-6\r\n")  # several ranges: all of it
    assert (r.status, len(r.body)) == (200, 102400)
    r = ask(p.port, b"/data.bin", b'Range: bytes=0-1\r\nIf-Range: "old"\r\n')
    assert (r.status, len(r.body)) == (200, 102400)


# Request targets as the client sends them, byte for byte: none may reach secret.txt.
ATTACKS = [
    b"/../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/secret.txt", b"/sub/../../secret.txt",
    b"/..%2fsecret.txt", b"/..%2Fsecret.txt", b"/%2e%2e%2fsecret.txt", b"/sub%2f..%2f..%2fsecret.txt",
    b"/..\\secret.txt", b"/sub\\..\\..\\secret.txt", b"/%5c..%5csecret.txt",
    b"/secret.txt%00.css", b"/index.html%00", b"/out.txt", b"/sub/..%00/secret.txt",
    b"//../secret.txt", b"/./../secret.txt", b"/%252e%252e/secret.txt",
]


@pytest.mark.parametrize("target", ATTACKS)
def test_no_way_out_of_the_root(porch, www, target):
    p = porch(site_config(www))
    r = ask(p.port, target)
    assert r.status in (400, 404), (target, r.status)
    assert SECRET not in r.body


def test_static_files_over_http2(porch, www):
    https_port = free_port()
    p = porch(site_config(www, 'tls = "internal"\nredirect_http = false\n'), https_port=https_port,
              tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")

    def get(path: str, *args: str):
        r = curl_fetch(f"https://{HOST}:{https_port}{path}", "--http2", "-k", *resolve(HOST, https_port), *args)
        assert r.rc == 0, r.stderr
        return r

    r = get("/")
    assert (r.status, r.body, r.header("content-type")) == (200, b"<h1>home</h1>\n", "text/html; charset=utf-8")
    r = get("/data.bin")
    assert r.body == bytes(range(256)) * 400
    r = get("/data.bin", "-H", f"If-None-Match: {r.header('etag')}")
    assert (r.status, r.body) == (304, b"")
    r = get("/data.bin", "-r", "256-511")
    assert (r.status, r.header("content-range"), r.body) == (206, "bytes 256-511/102400", bytes(range(256)))
    assert get("/data.bin", "-r", "999999-").status == 416
    r = get("/data.bin", "-I")  # HEAD (curl writes the head where the body would go)
    assert r.status == 200 and b"content-length: 102400\r\n" in r.body and len(r.body) < 400
    assert get("/sub").status == 301 and get("/empty/").status == 403
    assert get("/out.txt").status == 404 and get("/%2e%2e%2fsecret.txt").status in (400, 404)


def test_a_50mb_file_streams_with_bounded_memory(porch, www, tmp_path):
    size = 50 * MiB
    big = www / "big.bin"
    with open(big, "wb") as f:
        for i in range(50):
            f.write(hashlib.sha256(b"%d" % i).digest() * (MiB // 32))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    https_port = free_port()
    p = porch(site_config(www, 'tls = "internal"\nredirect_http = false\n'), https_port=https_port,
              tls="internal")
    wait_for_port(https_port, p.managed, what="porch https")
    before = p.rss_kib()
    out = tmp_path / "got.bin"
    with RSSSampler(p) as sampler:
        for args in ([f"http://{HOST}:{p.port}/big.bin", *resolve(HOST, p.port)],
                     [f"https://{HOST}:{https_port}/big.bin", "--http2", "-k", *resolve(HOST, https_port)],
                     # a slow reader: the file waits for it, nothing piles up
                     [f"http://{HOST}:{p.port}/big.bin", "--limit-rate", "25M", *resolve(HOST, p.port)]):
            proc = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", *args],
                                  capture_output=True, timeout=120)
            assert proc.stdout == b"200", proc.stderr
            assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    grown = sampler.peak_kib - before
    assert sampler.samples > 5
    assert grown < 12 * 1024, f"RSS grew {grown} KiB serving a {size // MiB} MiB file"
    line = p.access_log_lines(3)[-1]
    assert f" 200 {size} " in line


def test_try_files_serves_the_file_or_the_upstream(porch, upstream, www):
    up = upstream()
    p = porch(f'[[site]]\nhosts = ["{HOST}"]\nproxy = "{up.url}"\n'
              f'root = {{ path = "{www}", try_files = true }}\n')
    assert ask(p.port, b"/style.css").body == b"body { color: red }\n"
    r = ask(p.port, b"/api/items?x=1")
    assert r.status == 200 and r.json()["target"] == "/api/items?x=1"  # no file: the upstream
    assert ask(p.port, b"/empty/").json()["path"] == "/empty/"  # no index: the upstream too
    r = ask(p.port, b"/style.css", method=b"POST")
    assert r.json()["method"] == "POST"  # not GET/HEAD: the app's
    assert ask(p.port, b"/out.txt").json()["path"] == "/out.txt"  # out of the root: never the file
    assert up.stats()["requests"] == 4


def test_pipelined_files_and_a_client_that_leaves_mid_file(porch, www):
    (www / "big.bin").write_bytes(os.urandom(8 * MiB))
    p = porch(site_config(www))
    with RawConn(p.port, timeout=20) as c:  # two big files, then a small one, on one connection
        c.send(b"".join(b"GET /%s HTTP/1.1\r\nHost: app.test\r\n\r\n" % name
                        for name in (b"big.bin", b"data.bin", b"big.bin", b"style.css")))
        sizes = [len(c.read_response().body) for _ in range(4)]
    assert sizes == [8 * MiB, 102400, 8 * MiB, 20]
    baseline = p.fd_count()
    for _ in range(5):  # each leaves with most of the file unsent: its descriptor is closed
        with RawConn(p.port) as c:
            c.send(b"GET /big.bin HTTP/1.1\r\nHost: app.test\r\n\r\n")
            assert c.sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    assert wait_until(lambda: p.fd_count() <= baseline, timeout=10), (p.fd_count(), baseline)
    assert ask(p.port, b"/style.css").status == 200


def test_expires_and_compress_beside_root(porch, www):
    """Policies from main beside root: expires sets Expires/Cache-Control on files (its
    response hook sees Porch's own answers, as nginx's expires does for static files);
    compress leaves file answers as they are (Porch's own answers pass no body hook), so
    Content-Length and ranges stay exact."""
    p = porch(site_config(www, 'expires = "1h"\ncompress = true\n'))
    r = ask(p.port, b"/style.css", b"Accept-Encoding: gzip\r\n")
    assert (r.status, r.body) == (200, b"body { color: red }\n")
    assert r.header("Cache-Control") == "max-age=3600" and r.header("Expires")
    assert r.header("Content-Encoding") is None and r.header("Content-Length") == str(len(r.body))
