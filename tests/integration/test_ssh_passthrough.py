"""ssh through Porch's HTTPS port to a real OpenSSH server (Debian's openssh-server),
as sslh does in Snikket's guide: `[[stream]] protocol = "ssh"` beside Porch's own site.

The sshd runs as the user running the tests, on 127.0.0.1 and a test port, with host
and client keys made here by ssh-keygen, no PAM, and is stopped by its pid."""

from __future__ import annotations

import getpass
import subprocess
from pathlib import Path

import pytest

from .helpers import curl_fetch, free_port, resolve, wait_for_port
from .test_port_sharing import shared_porch
from .tlscerts import TestCA

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture
def sshd(procs, tmp_path):
    """The sshd's port and the client key it accepts."""
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    keygen(d / "host_key")
    keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nUsePAM no\nStrictModes no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {getpass.getuser()}\n")
    managed = procs.start([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], cwd=d, name="sshd")
    wait_for_port(port, managed, what="sshd")
    return port, d


def ssh(port: int, key: Path, known_hosts: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=10", "-i", str(key),
         "-p", str(port), f"{getpass.getuser()}@127.0.0.1", *command],
        capture_output=True, text=True, timeout=60)


def test_ssh_through_the_https_port_to_a_real_sshd(porch, upstream, sshd, tmp_path):
    ssh_port, d = sshd
    ca = TestCA(tmp_path, "Porch CA")
    p = shared_porch(porch, upstream().url, ca,
                     f'[[stream]]\nprotocol = "ssh"\npassthrough = "127.0.0.1:{ssh_port}"\n')
    # the host key seen through Porch's port is the sshd's own
    scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(p.https_port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=30)
    host_key = (d / "host_key.pub").read_text().split()[:2]
    assert scan.stdout.split()[1:3] == host_key, scan
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{p.https_port} {' '.join(host_key)}\n")
    # a session: authenticated with the client key, a command run, its output back
    result = ssh(p.https_port, d / "client_key", known, "echo", "through-porch")
    assert result.returncode == 0 and result.stdout == "through-porch\n", result
    # the same port still serves Porch's site over HTTPS
    r = curl_fetch(f"https://a.test:{p.https_port}/x", "--cacert", str(ca.ca_path),
                   *resolve("a.test", p.https_port))
    assert r.status == 200, r
    # ssh-keyscan waits for the server's banner (routed after SSH_WAIT of silence),
    # ssh speaks first (routed by its banner)
    lines = sorted(ln for ln in p.access_log_lines(3) if "PASSTHROUGH" in ln)
    assert len(lines) == 2, lines
    assert f'"PASSTHROUGH stream[0] ssh (client silent) -> 127.0.0.1:{ssh_port}" 200' in lines[0], lines
    assert f'"PASSTHROUGH stream[0] ssh -> 127.0.0.1:{ssh_port}" 200' in lines[1], lines
