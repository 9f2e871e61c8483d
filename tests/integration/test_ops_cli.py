"""`porch reopen-logs` (logrotate's postrotate in contrib/logrotate) and the systemd
readiness notification (contrib/porch.service, Type=notify), against a running Porch."""

from __future__ import annotations

import shutil
import socket
import subprocess

from .helpers import PORCH_BIN, Porch, wait_until
from .test_admin import get, site


def test_reopen_logs_command(porch, upstream, tmp_path):
    up = upstream()
    p = porch(site("a.test", f'"{up.url}"'))
    assert get(p.port, "a.test", "/before")[0] == 200
    assert wait_until(lambda: "/before" in p.access_log_path.read_text(), timeout=5)
    shutil.move(p.access_log_path, tmp_path / "access.log.1")
    out = subprocess.run([str(PORCH_BIN), "reopen-logs", "-c", str(p.config_path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and f"pid {p.pid}" in out.stdout, out
    sent = []

    def in_new_file() -> bool:
        sent.append(f"/after{len(sent)} ")
        assert get(p.port, "a.test", sent[-1].strip())[0] == 200
        return p.access_log_path.exists() and any(path in p.access_log_path.read_text() for path in sent)

    assert wait_until(in_new_file, timeout=10, interval=0.1)
    p.stop()
    out = subprocess.run([str(PORCH_BIN), "reopen-logs", "-c", str(p.config_path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "no porch is running" in out.stderr


def test_ready_notification(procs, upstream, tmp_path, monkeypatch):
    up = upstream()
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", path)  # as systemd sets it for a Type=notify unit
        workdir = tmp_path / "porch"
        workdir.mkdir()
        p = Porch(procs, workdir, site("a.test", f'"{up.url}"'))
        assert sock.recv(100) == b"READY=1"
        assert get(p.port, "a.test")[0] == 200  # ready meant serving
