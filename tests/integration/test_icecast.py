"""Icecast behind Porch, for real: Debian's icecast2 started by the test, a source
pushing an endless PUT body through Porch, and a listener through Porch receiving
the stream continuously for 30 s while Porch's memory stays flat; both over HTTPS
(certificate files from a test CA), Icecast itself on plain HTTP behind Porch.

This is how a LibreTime station serves its Icecast streams from its own HTTPS
site (examples/libretime.toml): no mixed-content error in the browser player.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import socket
import ssl
import threading
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from .helpers import Managed, free_port, rss_kib, wait_for_port
from .tlscerts import TestCA

KiB = 1024
RATE = 16 * KiB  # bytes per second, a 128 kbit/s MP3 stream
LISTEN_SECONDS = 30
# Each byte is the previous one plus one (mod 256): a listener can check that what it
# got is one unbroken run of what the source sent, wherever it joined.
NEXT = bytes((i + 1) % 256 for i in range(256))
PATTERN = bytes(range(256)) * 4
PASSWORD = "source-secret"

ICECAST_XML = """<icecast>
  <location>porch test</location><admin>test@localhost</admin>
  <limits><clients>20</clients><sources>2</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>65536</burst-size></limits>
  <authentication><source-password>{password}</source-password>
    <admin-user>admin</admin-user><admin-password>{password}</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><basedir>/usr/share/icecast2</basedir><logdir>{logdir}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>3</loglevel></logging>
  <security><chroot>0</chroot>{changeowner}</security>
</icecast>
"""


@pytest.fixture
def icecast(procs, tmp_path):
    """icecast2 on a free port of 127.0.0.1.  It refuses to run as root: as root it
    is told to switch to the Debian package's user (<changeowner>), which then must
    be able to reach and write its logs (pytest's tmp_path is private to root)."""
    binary = shutil.which("icecast2")
    assert binary, "icecast2 is not installed (Debian package icecast2; scripts/test.sh installs it)"
    logdir = Path(tempfile.mkdtemp(prefix="porch-icecast-"))
    changeowner = ""
    if os.geteuid() == 0:
        user = pwd.getpwnam("icecast2")
        changeowner = "<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
        os.chown(logdir, user.pw_uid, user.pw_gid)
    port = free_port()
    config = tmp_path / "icecast.xml"
    config.write_text(ICECAST_XML.format(port=port, logdir=logdir, password=PASSWORD,
                                         changeowner=changeowner))
    managed: Managed = procs.start([binary, "-c", str(config)], cwd=tmp_path, name="icecast2")
    try:
        wait_for_port(port, managed, what="icecast2")
        time.sleep(0.3)  # it binds before it changes owner and opens its logs
        assert managed.running(), f"icecast2 exited: {managed.output()}"
        yield port
    finally:
        managed.kill()
        shutil.rmtree(logdir, ignore_errors=True)


class Source(threading.Thread):
    """An Icecast source over HTTP PUT (Icecast 2.4): an endless body at RATE.

    Icecast 2.4 does not decode chunked bodies, so the body is framed the way a
    proxy can pass on and Icecast can read: a Content-Length no stream reaches."""

    def __init__(self, port: int, host: str, mount: str, context: ssl.SSLContext):
        super().__init__(daemon=True)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        auth = base64.b64encode(f"source:{PASSWORD}".encode()).decode()
        self.sock.sendall(f"PUT {mount} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
                          f"Content-Type: audio/mpeg\r\nIce-Name: porch test\r\n"
                          f"Content-Length: {2**40}\r\n\r\n".encode())
        self.stop = threading.Event()
        self.sent = 0
        self.error: Exception | None = None

    def run(self) -> None:
        step = len(PATTERN)
        start = time.monotonic()
        try:
            while not self.stop.is_set():
                self.sock.sendall(PATTERN)
                self.sent += step
                delay = start + self.sent / RATE - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
        except OSError as exc:
            self.error = exc
        finally:
            self.sock.close()

    def answer(self) -> bytes:
        """The response head Icecast sent the source (through Porch)."""
        self.sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_icecast_stream_through_porch_over_https(icecast, porch, tmp_path):
    ca = TestCA(tmp_path)
    cert, key, _ = ca.leaf(["radio.test"], "radio")
    https_port = free_port()
    p = porch('[[site]]\nhosts = ["radio.test"]\n'
              f'proxy = "http://127.0.0.1:{icecast}"\n'
              f'tls = {{ cert = "{cert}", key = "{key}" }}\n', https_port=https_port)
    wait_for_port(https_port, p.managed, what="porch https")
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    source = Source(https_port, "radio.test", "/live.mp3", context)
    source.start()
    try:
        assert source.answer().startswith(b"HTTP/1.1 200"), "Icecast refused the source"
        received = bytearray()
        gaps: list[float] = []
        rss: list[int] = []
        with httpx.Client(timeout=10, verify=context) as client, client.stream(
                "GET", f"https://127.0.0.1:{https_port}/live.mp3", headers={"Host": "radio.test"},
                extensions={"sni_hostname": "radio.test"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "audio/mpeg"
            started = last = time.monotonic()
            for chunk in r.iter_bytes():
                now = time.monotonic()
                gaps.append(now - last)
                last = now
                received += chunk
                if not rss and now - started > 3:
                    rss.append(rss_kib(p.pid))  # after the burst, once it has settled
                if now - started >= LISTEN_SECONDS:
                    break
            rss.append(rss_kib(p.pid))
            elapsed = time.monotonic() - started
        assert source.is_alive() and source.error is None, f"source cut: {source.error}"
    finally:
        source.stop.set()
        source.join(5)
    assert elapsed >= LISTEN_SECONDS
    assert len(received) >= 0.9 * RATE * LISTEN_SECONDS, f"{len(received)} bytes in {elapsed:.0f}s"
    assert max(gaps[5:]) < 1.5, f"the stream stalled for {max(gaps):.1f}s"
    assert bytes(received[:-1]).translate(NEXT) == bytes(received[1:]), "bytes lost or garbled"
    grew = rss[-1] - rss[0]
    print(f"{len(received)} bytes in {elapsed:.0f}s, longest gap {max(gaps[5:]):.2f}s,"
          f" Porch RSS {rss[0]} -> {rss[-1]} KiB")
    assert grew < 2 * 1024, f"Porch RSS grew by {grew} KiB in {elapsed:.0f}s ({rss[0]} -> {rss[-1]} KiB)"
