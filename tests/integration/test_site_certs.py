"""Certificates from files, as a newcomer meets them: bundles and on_certificate for
`tls = { cert, key }`, `porch certs`, `porch check` on broken pairs, separate chain
files, and `porch trust` without a local CA.

Real processes only: Porch, curl, files made by the tests (tlscerts.py).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .helpers import PORCH_BIN, curl_fetch, free_port, resolve, site, wait_for_port, wait_until
from .tlscerts import TestCA, write_atomic


def porch_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PORCH_BIN), *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, check=False)


def tls_porch(porch, sites: str, **keys):
    keys.setdefault("https_port", free_port())
    p = porch(sites, **keys)
    p.https_port = keys["https_port"]
    wait_for_port(p.https_port, p.managed, what="porch https")
    return p


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- item 12: bundles and on_certificate for certbot's files -----------------------------


def test_files_site_writes_its_bundle_and_runs_its_hook_at_start_and_on_each_change(porch, upstream, tmp_path):
    up = upstream()
    ca = TestCA(tmp_path)
    cert, key, first = ca.leaf(["radio.test"], "fullchain")  # certbot's live/<name>/ files
    bundle, marker = tmp_path / "bundle.pem", tmp_path / "hook.log"
    extra = (f'tls = {{ cert = "{cert}", key = "{key}" }}\n'
             f'bundles = [{{ path = "{bundle}", contents = ["fullchain", "key"], mode = "0640" }}]\n'
             f'on_certificate = "echo $PORCH_SITE $PORCH_CERT_FULLCHAIN $PORCH_CERT_NOT_AFTER >> {marker}"\n')
    p = tls_porch(porch, site(up.url, extra, host="radio.test"))
    state = p.keys["state_dir"]

    # at start: Icecast's bundle.pem (fullchain, then key) and the hook, once
    assert wait_until(lambda: len(lines(marker)) == 1, timeout=10), p.error_log_text()
    assert bundle.read_bytes() == cert.read_bytes() + key.read_bytes()
    assert bundle.stat().st_mode & 0o777 == 0o640
    assert lines(marker)[0].startswith(f"radio.test {cert} ")
    assert "certificate deployed" in p.error_log_text(wait_for="certificate deployed")

    # certbot renews: new files renamed over the old ones; bundle rewritten, hook again
    _, _, second = ca.leaf(["radio.test"], "fullchain")
    assert second != first
    assert wait_until(lambda: len(lines(marker)) == 2, timeout=15), p.error_log_text()
    assert bundle.read_bytes() == cert.read_bytes() + key.read_bytes()
    assert x509.load_pem_x509_certificate(bundle.read_bytes()).serial_number == second
    p.stop()

    # bundle gone while Porch was stopped: written again at start
    bundle.unlink()
    p2 = tls_porch(porch, site(up.url, extra, host="radio.test"), state_dir=state)
    assert wait_until(bundle.exists, timeout=10), p2.error_log_text()
    assert x509.load_pem_x509_certificate(bundle.read_bytes()).serial_number == second
    assert wait_until(lambda: len(lines(marker)) == 3, timeout=5)


def test_a_broken_pair_is_not_deployed_and_the_bundle_keeps_the_good_one(porch, upstream, tmp_path):
    up = upstream()
    ca = TestCA(tmp_path)
    cert, key, first = ca.leaf(["radio.test"], "fullchain")
    bundle = tmp_path / "bundle.pem"
    extra = f'tls = {{ cert = "{cert}", key = "{key}" }}\nbundles = [{{ path = "{bundle}" }}]\n'
    p = tls_porch(porch, site(up.url, extra, host="radio.test"))
    assert wait_until(bundle.exists, timeout=10), p.error_log_text()
    good = bundle.read_bytes()
    other, _, _ = ca.leaf(["radio.test"], "other")
    write_atomic(cert, other.read_bytes())  # the certificate of another key
    assert "certificate files do not load" in p.error_log_text(wait_for="certificate files do not load",
                                                              timeout=10)
    assert bundle.read_bytes() == good


# -- item 13: porch certs lists files and local CA certificates --------------------------


def test_porch_certs_lists_files_and_internal_certificates_with_hours_left(porch, upstream, tmp_path):
    up = upstream()
    ca = TestCA(tmp_path)
    cert, key, _ = ca.leaf(["files.test"], "fullchain", days=1.5)
    p = tls_porch(porch, site(up.url, f'tls = {{ cert = "{cert}", key = "{key}" }}\n', host="files.test")
                  + "\n" + site(up.url, 'tls = "internal"\n', host="localhost"))
    assert wait_until(lambda: (Path(p.keys["state_dir"]) / "certs/localhost/meta.json").exists(), timeout=10)
    r = porch_cli("certs", "-c", str(p.config_path))
    assert r.returncode == 0, r.stderr
    head, *rows = r.stdout.splitlines()
    assert head.split() == ["NAMES", "SOURCE", "ISSUER", "NOT", "AFTER", "LEFT", "STATE"]
    files = next(row for row in rows if row.startswith("files.test"))
    assert files.split()[1:3] == ["files", "Porch"]  # issuer "Porch test CA"
    assert files.split()[-2] in ("35h", "36h") and files.endswith("valid")
    internal = next(row for row in rows if row.startswith("localhost"))
    assert " internal " in internal and internal.split()[-2] in ("22h", "23h", "24h") and internal.endswith("valid")


def test_porch_certs_before_the_first_run_names_the_local_ca_site(tmp_path):
    config = tmp_path / "porch.toml"
    config.write_text(f'[porch]\nstate_dir = "{tmp_path}/state"\n' + site("http://127.0.0.1:1", host="localhost"))
    r = porch_cli("certs", "-c", str(config))
    assert r.returncode == 0, r.stderr
    assert "no certificates" not in r.stdout
    row = r.stdout.splitlines()[1]
    assert row.split()[:2] == ["localhost", "internal"] and row.endswith("made when porch runs")


# -- item 14: pairs that do not load, and chains -----------------------------------------


def check_config(tmp_path: Path, tls: str, **porch_keys) -> Path:
    config = tmp_path / "porch.toml"
    keys = {"http_port": free_port(), "https_port": free_port(), "state_dir": f"{tmp_path}/state", **porch_keys}
    head = "[porch]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    config.write_text(head + 'bind = ["127.0.0.1"]\n' + site("http://127.0.0.1:1", tls, host="a.test"))
    return config


def test_check_refuses_a_key_that_is_not_the_certificates_and_run_does_not_start(tmp_path):
    ca = TestCA(tmp_path)
    cert, _, _ = ca.leaf(["a.test"], "a")
    _, other_key, _ = ca.leaf(["a.test"], "b")
    config = check_config(tmp_path, f'tls = {{ cert = "{cert}", key = "{other_key}" }}\n')
    r = porch_cli("check", "-c", str(config))
    assert r.returncode == 1
    assert (f'site[0].tls.key: "{other_key}" is not the private key of the certificate in "{cert}"'
            " (for a.test); give the key made with that certificate") in r.stderr, r.stderr
    r = porch_cli("run", "-c", str(config))
    assert r.returncode == 1 and "is not the private key" in r.stderr


def test_check_refuses_a_key_file_given_as_the_certificate(tmp_path):
    ca = TestCA(tmp_path)
    _, key, _ = ca.leaf(["a.test"], "a")
    r = porch_cli("check", "-c", str(check_config(tmp_path, f'tls = {{ cert = "{key}", key = "{key}" }}\n')))
    assert r.returncode == 1
    assert f'site[0].tls.cert: "{key}" holds a private key, not a certificate' in r.stderr, r.stderr
    assert "PEM lib" not in r.stderr


def _ca_cert(subject: x509.Certificate, public_key, issuer: x509.Certificate, signer) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject.subject).issuer_name(issuer.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(signer, hashes.SHA256()))


def two_level_pki(d: Path) -> tuple[TestCA, Path]:
    """A root and an intermediate signed by it (as Let's Encrypt's R11 under ISRG X1);
    returns the intermediate (which issues leaves) and the root's file (clients trust it)."""
    (d / "root").mkdir()
    root, inter = TestCA(d / "root", "Test Root"), TestCA(d, "Test Intermediate")
    root.cert = _ca_cert(root.cert, root.key.public_key(), root.cert, root.key)
    inter.cert = _ca_cert(inter.cert, inter.key.public_key(), root.cert, root.key)
    for ca in (root, inter):
        ca.ca_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    return inter, root.ca_path


def test_leaf_alone_warns_and_a_separate_chain_file_is_served(porch, upstream, tmp_path):
    up = upstream()
    inter, root = two_level_pki(tmp_path)
    full, key, _ = inter.leaf(["a.test"], "a")  # a.pem: leaf + intermediate
    leaf = tmp_path / "cert.pem"  # certbot's cert.pem: the leaf alone
    leaf.write_bytes(full.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n")
    chain = inter.ca_path  # certbot's chain.pem

    r = porch_cli("check", "-c", str(check_config(tmp_path, f'tls = {{ cert = "{leaf}", key = "{key}" }}\n')))
    assert r.returncode == 0, r.stderr
    assert (f'warning: site[0].tls.cert: "{leaf}" holds only the site\'s certificate, issued by'
            " CN=Test Intermediate, and no intermediate") in r.stdout
    assert '"unable to get local issuer certificate"' in r.stdout and 'chain = "chain.pem"' in r.stdout

    # Apache-style: cert and chain in two files; clients that trust only the root verify
    p = tls_porch(porch, site(up.url, f'tls = {{ cert = "{leaf}", key = "{key}", chain = "{chain}" }}\n',
                              host="a.test"))
    res = curl_fetch(f"https://a.test:{p.https_port}/", "--cacert", str(root), *resolve("a.test", p.https_port))
    assert res.rc == 0 and res.status == 200, res.stderr
    p.stop()
    # control: the leaf alone fails exactly as the warning said
    p = tls_porch(porch, site(up.url, f'tls = {{ cert = "{leaf}", key = "{key}" }}\n', host="a.test"))
    res = curl_fetch(f"https://a.test:{p.https_port}/", "--cacert", str(root), *resolve("a.test", p.https_port))
    assert res.rc != 0 and "unable to get local issuer certificate" in res.stderr


# -- item 15: ACME without port 80, porch trust without a local CA -----------------------


def test_check_warns_when_an_auto_site_cannot_be_validated_on_http_port(tmp_path):
    config = check_config(tmp_path, "", http_port=8080)
    config.write_text(config.read_text().replace('hosts = ["a.test"]', 'hosts = ["example.org"]'))
    r = porch_cli("check", "-c", str(config))
    assert r.returncode == 0, r.stderr
    assert "configuration is valid, with 1 warning(s)" in r.stdout
    assert "warning: porch.http_port: 8080 is not 80, and site[0] (example.org) get certificates from ACME" \
           " over HTTP-01" in r.stdout


def test_trust_without_a_local_ca_site_creates_nothing_and_says_what_to_do(tmp_path):
    ca = TestCA(tmp_path)
    cert, key, _ = ca.leaf(["a.test"], "a")
    config = check_config(tmp_path, f'tls = {{ cert = "{cert}", key = "{key}" }}\n')
    r = porch_cli("trust", "-c", str(config))
    assert r.returncode == 1
    assert r.stdout == ""
    assert 'uses Porch\'s local CA (tls = "internal")' in r.stderr and "nothing was created" in r.stderr
    assert not (tmp_path / "state" / "ca").exists()
