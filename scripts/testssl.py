#!/usr/bin/env python3
"""Run testssl.sh (Debian package testssl.sh) against Porch's HTTPS listener on 127.0.0.1.

    .venv/bin/python scripts/testssl.py                # certificate from files (90 days)
    .venv/bin/python scripts/testssl.py --internal     # Porch's local CA (24-hour leaves)

Starts the demo upstream and Porch in a temporary directory, runs testssl against
https://localhost:PORT with the test CA (or Porch's root) trusted, prints every finding
of severity LOW or above, and stops what it started, by pid.  The files case uses a
certificate shaped like a public CA's (90 days, ECDSA P-256, a CRL distribution
point) made here by a throwaway CA, so that testssl judges Porch's TLS settings rather
than a test certificate.  Not part of the test suite (it takes a minute or two);
docs/testssl.md keeps the last summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORCH = REPO / ".venv" / "bin" / "porch"
PYTHON = REPO / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_files(d: Path) -> tuple[Path, Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "testssl throwaway CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://crl.invalid/testssl.crl")], None, None, None)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (d / "privkey.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    os.chmod(d / "privkey.pem", 0o600)
    return d / "ca.pem", d / "fullchain.pem", d / "privkey.pem"


def main() -> int:
    ap = argparse.ArgumentParser(description="testssl.sh against Porch on 127.0.0.1")
    ap.add_argument("--internal", action="store_true", help='tls = "internal" instead of files')
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="porch-testssl-"))
    http_port, https_port, up_port = free_port(), free_port(), free_port()
    if args.internal:
        tls = 'tls = "internal"'
    else:
        ca, cert, key = make_files(d)
        tls = f'tls = {{ cert = "{cert}", key = "{key}" }}'
    # 127.0.0.1 in hosts: clients that send no SNI (some testssl checks) get this certificate.
    (d / "porch.toml").write_text(f"""[porch]
http_port = {http_port}
https_port = {https_port}
bind = ["127.0.0.1"]
state_dir = "{d}/state"
access_log = "off"
error_log = "{d}/error.log"

[[site]]
hosts = ["localhost", "127.0.0.1"]
proxy = "http://127.0.0.1:{up_port}"
{tls}
hsts = "1y"
""")
    started = []
    try:
        started.append(subprocess.Popen([str(PYTHON), "-m", "porch.demo_upstream", "--port", str(up_port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        started.append(subprocess.Popen([str(PORCH), "run", "-c", str(d / "porch.toml")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        if args.internal:
            ca = d / "root.pem"
            ca.write_bytes(subprocess.run([str(PORCH), "trust", "-c", str(d / "porch.toml")],
                                          capture_output=True, check=True).stdout)
        result = d / "result.json"
        run = subprocess.run(["testssl", "--color", "0", "--warnings", "batch", "--add-ca", str(ca),
                              "--jsonfile-pretty", str(result), f"localhost:{https_port}"],
                             capture_output=True, text=True)
        (d / "testssl.txt").write_text(run.stdout)
        findings = [f for part in json.loads(result.read_text())["scanResult"]
                    for value in part.values() if isinstance(value, list) for f in value]
        counts: dict[str, int] = {}
        for f in findings:
            counts[f["severity"]] = counts.get(f["severity"], 0) + 1
        print(f"testssl on https://localhost:{https_port} ({'internal CA' if args.internal else 'files'});"
              f" full output in {d}/testssl.txt")
        print("severities:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for f in findings:
            if f["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN"):
                print(f"  {f['severity']:8} {f['id']:24} {f['finding']}")
        return 1 if counts.get("HIGH") or counts.get("CRITICAL") else 0
    finally:
        for p in reversed(started):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
