"""ACME against pebble: issuance over HTTP-01 with Porch answering the challenges on
its http_port, the challenge path, failures with the CA's detail, renewal, hooks."""

from __future__ import annotations

import grp
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store

from .helpers import PORCH_BIN, RawConn, free_port, wait_until
from .pebble import Pebble


@pytest.fixture
def acme(procs, tmp_path):
    """Factory: `acme()` -> (pebble, porch_http_port): pebble validating against the port
    Porch will listen on."""

    def start(**kwargs) -> tuple[Pebble, int]:
        http_port = free_port()
        return Pebble(procs, tmp_path / "pebble", http_port, **kwargs), http_port

    return start


def acme_keys(pebble: Pebble, http_port: int) -> dict:
    return {"http_port": http_port, "https_port": free_port(), "acme_ca": pebble.directory,
            "acme_ca_root": str(pebble.root_pem), "email": "admin@example.org"}


def stored(porch, name: str) -> dict | None:
    try:
        return json.loads((porch.workdir / "state" / "certs" / name / "meta.json").read_text())
    except FileNotFoundError:
        return None


def wait_valid(porch, name: str, timeout: float = 30.0, newer_than: str | None = None) -> dict:
    """meta.json of `name` once it says valid (and, if given, a different not_before)."""

    def ready():
        meta = stored(porch, name)
        return meta if meta and meta["state"] == "valid" and meta["not_before"] != newer_than else None

    assert wait_until(ready, timeout=timeout), f"no valid certificate for {name}\n{porch.error_log_text()}"
    return ready()


def leaf_and_chain(path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return certs[0], certs[1:]


def verify(pebble: Pebble, path, name: str) -> x509.Certificate:
    """The leaf in fullchain.pem `path`, checked to chain up to pebble's issuing root for `name`."""
    leaf, chain = leaf_and_chain(path)
    store = Store([x509.load_pem_x509_certificate(pebble.issuing_root().encode())])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
    verifier.verify(leaf, chain)
    return leaf


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName))


SITES = """
[[site]]
hosts = ["a.example.com", "www.a.example.com"]
proxy = "{up}"
tls = "auto"

[[site]]
hosts = ["b.example.com"]
proxy = "{up}"
tls = "auto"
"""


def test_two_sites_get_certificates_over_http01(acme, porch, upstream):
    pebble, http_port = acme()
    up = upstream()
    p = porch(SITES.format(up=up.url), **acme_keys(pebble, http_port))
    meta_a = wait_valid(p, "a.example.com")
    meta_b = wait_valid(p, "b.example.com")
    state = p.workdir / "state" / "certs"
    for name, names, meta in (("a.example.com", {"a.example.com", "www.a.example.com"}, meta_a),
                              ("b.example.com", {"b.example.com"}, meta_b)):
        assert set(meta["names"]) == names and meta["source"] == "acme"
        assert meta["last_error"] is None and meta["issuer"].startswith("Pebble Intermediate")
        fullchain, key = state / name / "fullchain.pem", state / name / "privkey.pem"
        assert stat.S_IMODE(fullchain.stat().st_mode) == 0o644
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        for each in names:
            leaf = verify(pebble, fullchain, each)
        assert sans(leaf) == names
        assert leaf.public_key().curve.name == "secp256r1"  # ECDSA P-256 by default
        assert meta["not_after"] == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    # the key authorizations were removed once validated
    assert not list((p.workdir / "state" / "acme" / "http-01").iterdir())
    log = p.error_log_text()
    assert "ACME: certificate stored site=a.example.com" in log, log
    # Porch serves the new certificates without restart: HTTPS with SNI gets each
    # site's leaf, and plain HTTP now redirects there
    https_port = int(re.search(r"https_port = (\d+)", p.config_path.read_text()).group(1))
    ctx = ssl.create_default_context(cadata=pebble.issuing_root())
    for name in ("a.example.com", "b.example.com"):
        leaf, _ = leaf_and_chain(state / name / "fullchain.pem")

        def served(name=name, leaf=leaf) -> bool:
            try:
                with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw, \
                        ctx.wrap_socket(raw, server_hostname=name) as tls:
                    return tls.getpeercert(binary_form=True) == leaf.public_bytes(Encoding.DER)
            except (ssl.SSLError, OSError):
                return False

        assert wait_until(served, timeout=5), p.error_log_text()
    with RawConn(http_port) as c:
        c.send(b"GET /x?y=1 HTTP/1.1\r\nHost: b.example.com\r\n\r\n")
        r = c.read_response()
        assert r.status == 308 and r.header("location") == f"https://b.example.com:{https_port}/x?y=1"


def test_failing_challenge_is_logged_with_the_cas_detail_and_retried_with_backoff(acme, porch, upstream,
                                                                                  tmp_path):
    """bad.example.com resolves (for pebble) to 127.0.0.2, where nothing listens: the CA's
    connection error is logged and kept in meta.json; retries back off; once DNS is
    fixed, the next retry succeeds."""
    import asyncio

    from porch.config.toml import load
    from porch.observability.errorlog import ErrorLog
    from porch.storage import FileStorage
    from porch.tls.manager import CertManager

    pebble, http_port = acme()
    pebble.add_a("bad.example.com", "127.0.0.2")
    up = upstream()
    site = f'[[site]]\nhosts = ["bad.example.com"]\nproxy = "{up.url}"\ntls = "auto"\n'
    p = porch(site, **acme_keys(pebble, http_port))
    # The porch process started its own manager; this one, in-process with a short
    # backoff, shares its state_dir (as `porch certs renew` would): the storage lock
    # keeps them from issuing at the same time.
    wait_until(lambda: stored(p, "bad.example.com"), timeout=20)
    config = load(p.config_path)
    log_path = tmp_path / "manager.log"
    manager = CertManager(config, FileStorage(config.porch.state_dir), ErrorLog(str(log_path)),
                          retry_base=0.4, retry_cap=5.0)
    meta_path = p.workdir / "state" / "certs" / "bad.example.com" / "meta.json"
    # the first attempt (porch's) failed and waits ~1 minute; make it due now
    meta = json.loads(meta_path.read_text())
    assert meta["state"] == "failing" and meta["attempts"] == 1
    assert "127.0.0.2" in meta["last_error"] and "connection refused" in meta["last_error"].lower()
    assert "urn:ietf:params:acme:error:connection" in meta["last_error"]
    meta["next_attempt"] = None
    meta_path.write_text(json.dumps(meta))

    async def drive() -> list[float]:
        site_cfg = manager.sites[0]
        delays = []
        for _ in range(3):
            delays.append(await asyncio.to_thread(manager.step, site_cfg))
            time.sleep(max(0.0, delays[-1]))
        return delays

    delays = asyncio.run(drive())
    text = log_path.read_text()
    lines = [ln for ln in text.splitlines() if "certificate not obtained" in ln]
    assert len(lines) == 3, text
    assert all("site=bad.example.com" in ln and "urn:ietf:params:acme:error:connection" in ln for ln in lines)
    assert [ln.split("attempt=")[1].split()[0] for ln in lines] == ["2", "3", "4"]
    # backoff: 0.4 * 2^(n-1) with 50-100 % jitter, capped
    assert 0.4 <= delays[0] <= 0.8 + 0.01 and 0.8 <= delays[1] <= 1.6 + 0.01 and 1.6 <= delays[2] <= 3.2 + 0.01
    assert json.loads(meta_path.read_text())["state"] == "failing"
    # fixed DNS: the next attempt gets the certificate
    pebble.add_a("bad.example.com", "127.0.0.1")
    asyncio.run(asyncio.to_thread(manager.step, manager.sites[0]))
    meta = json.loads(meta_path.read_text())
    assert meta["state"] == "valid" and meta["last_error"] is None and meta["attempts"] == 0, meta
    verify(pebble, meta_path.parent / "fullchain.pem", "bad.example.com")


def porch_cli(p, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(PORCH_BIN), "certs", "-c", str(p.config_path), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_forced_renewal_replaces_files_runs_hook_and_bundle(acme, porch, upstream, tmp_path):
    pebble, http_port = acme()
    up = upstream()
    hook_log, bundle = tmp_path / "hook.log", tmp_path / "bundle.pem"
    group = grp.getgrgid(os.getgid()).gr_name
    config = SITES.format(up=up.url).replace(
        '[[site]]\nhosts = ["b.example.com"]',
        f'on_certificate = "env | grep ^PORCH_ | sort >> {hook_log}; echo --- >> {hook_log}"\n'
        f'bundles = [{{ path = "{bundle}", contents = ["fullchain", "key"], mode = "0640", group = "{group}" }}]\n'
        '\n[[site]]\nhosts = ["b.example.com"]\non_certificate = "echo reload failed >&2; exit 3"\n', 1)
    p = porch(config, **acme_keys(pebble, http_port))
    first = wait_valid(p, "a.example.com")
    certs = p.workdir / "state" / "certs"
    assert wait_until(lambda: "---" in hook_log.read_text() if hook_log.exists() else False, timeout=10)
    env = dict(line.split("=", 1) for line in hook_log.read_text().split("---")[0].splitlines() if line)
    assert env == {"PORCH_SITE": "a.example.com", "PORCH_CERT_NAMES": "a.example.com www.a.example.com",
                   "PORCH_CERT_FULLCHAIN": str(certs / "a.example.com" / "fullchain.pem"),
                   "PORCH_CERT_KEY": str(certs / "a.example.com" / "privkey.pem"),
                   "PORCH_CERT_DIR": str(certs / "a.example.com"),
                   "PORCH_CERT_NOT_AFTER": first["not_after"]}
    old_chain = (certs / "a.example.com" / "fullchain.pem").read_bytes()
    old_key = (certs / "a.example.com" / "privkey.pem").read_bytes()
    assert bundle.read_bytes() == old_chain + old_key
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o640 and bundle.stat().st_gid == os.getgid()
    # b's hook fails: logged, kept in meta.json, never fatal
    wait_valid(p, "b.example.com")
    assert wait_until(lambda: (stored(p, "b.example.com") or {}).get("deploy_error"), timeout=10)
    assert stored(p, "b.example.com")["deploy_error"] == (
        "on_certificate 'echo reload failed >&2; exit 3' exited with status 3: reload failed")
    assert "ACME: deploy failed (retried at the next renewal)" in p.error_log_text()

    # `porch certs` lists both
    listing = porch_cli(p)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAMES", "SOURCE", "ISSUER", "NOT", "AFTER", "LEFT", "STATE"]
    a_row = next(ln for ln in lines if ln.startswith("a.example.com, www.a.example.com"))
    assert " acme " in a_row and "Pebble Intermediate" in a_row and a_row.endswith("valid")
    assert first["not_after"] in a_row
    assert "deploy: on_certificate 'echo reload failed >&2; exit 3' exited with status 3" in listing.stdout

    # not due: nothing happens
    quiet = porch_cli(p, "renew")
    assert quiet.returncode == 0 and "a.example.com: not due: renewal from" in quiet.stdout, quiet
    assert (certs / "a.example.com" / "fullchain.pem").read_bytes() == old_chain

    # dry run against the private CA: a real order, nothing stored, no hook
    dry = porch_cli(p, "renew", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "a.example.com: dry run ok" in dry.stdout and "b.example.com: dry run ok" in dry.stdout
    assert (certs / "a.example.com" / "fullchain.pem").read_bytes() == old_chain
    assert hook_log.read_text().count("---") == 1

    # forced: new files (new key too), hook and bundle again, the running Porch untouched
    forced = porch_cli(p, "renew", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "a.example.com: renewed: valid until" in forced.stdout
    assert "b.example.com: renewed: valid until" in forced.stdout and "deploy failed" in forced.stdout
    new_chain = (certs / "a.example.com" / "fullchain.pem").read_bytes()
    new_key = (certs / "a.example.com" / "privkey.pem").read_bytes()
    assert new_chain != old_chain and new_key != old_key
    assert leaf_and_chain(certs / "a.example.com" / "fullchain.pem")[0].serial_number != \
        x509.load_pem_x509_certificate(old_chain).serial_number
    verify(pebble, certs / "a.example.com" / "fullchain.pem", "www.a.example.com")
    assert stored(p, "a.example.com")["state"] == "valid"
    assert hook_log.read_text().count("---") == 2
    assert bundle.read_bytes() == new_chain + new_key
    assert p.managed.running()
    # a "renewing" left behind by a process killed mid-renewal is settled at the next look
    meta_path = certs / "a.example.com" / "meta.json"
    meta_path.write_text(meta_path.read_text().replace('"state": "valid"', '"state": "renewing"'))
    assert porch_cli(p, "renew").returncode == 0
    assert stored(p, "a.example.com")["state"] == "valid"


def test_background_renewal_when_a_third_of_the_lifetime_is_left(acme, porch, upstream):
    """pebble issues 9-second certificates: the running Porch renews each after ~6 s,
    by itself, and the new files replace the old."""
    pebble, http_port = acme(validity=9)
    up = upstream()
    p = porch(SITES.format(up=up.url).split("\n\n[[site]]")[0], **acme_keys(pebble, http_port))
    first = wait_valid(p, "a.example.com")
    lifetime = (leaf_and_chain(p.workdir / "state" / "certs" / "a.example.com" / "fullchain.pem")[0])
    assert (lifetime.not_valid_after_utc - lifetime.not_valid_before_utc).total_seconds() < 12
    second = wait_valid(p, "a.example.com", timeout=20, newer_than=first["not_before"])
    assert second["not_after"] > first["not_after"]
    log = p.error_log_text()
    assert "ACME: renewing certificate site=a.example.com" in log, log
    verify(pebble, p.workdir / "state" / "certs" / "a.example.com" / "fullchain.pem", "a.example.com")


def test_concurrent_renewers_issue_once(acme, porch, upstream, tmp_path):
    """Two `porch certs renew` at once on the same state_dir: the storage lock makes
    one issue, the other then finds the certificate in place."""
    pebble, http_port = acme()
    up = upstream()
    # this Porch only answers the challenges (no manager of its own: tls is off)
    p = porch(f'[[site]]\nhosts = ["a.example.com"]\nproxy = "{up.url}"\nacme_challenge = "upstream"\n',
              **acme_keys(pebble, http_port))
    renewer = p.config_path.read_text().replace('acme_challenge = "upstream"', 'tls = "auto"')
    (tmp_path / "renew.toml").write_text(renewer)
    argv = [str(PORCH_BIN), "certs", "renew", "-c", str(tmp_path / "renew.toml")]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [r.communicate(timeout=60) for r in runs]
    assert all(r.returncode == 0 for r in runs), outs
    said = sorted(out.strip().split(": ")[1] for out, _ in outs)
    assert said == ["issued", "not due"], outs
    assert stored(p, "a.example.com")["state"] == "valid"


def tls_get(port: int, name: str, cafile: Path, sock: ssl.SSLSocket | None = None):
    """(status, leaf certificate, the TLS socket) for GET / on `name` over TLS (SNI
    `name`, verified against `cafile`); pass `sock` to send on an open connection."""
    if sock is None:
        ctx = ssl.create_default_context(cafile=str(cafile))
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=name)
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        head += chunk
    status = int(head.split(b" ", 2)[1])
    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += sock.recv(65536)
    return status, x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)), sock


def test_issued_certificates_are_served_over_https_and_swapped_after_renewal(acme, porch, upstream, tmp_path):
    pebble, http_port = acme()
    up = upstream()
    keys = acme_keys(pebble, http_port)
    https_port = keys["https_port"]
    p = porch(SITES.format(up=up.url), **keys)
    wait_valid(p, "a.example.com")
    wait_valid(p, "b.example.com")
    cafile = tmp_path / "pebble-issuing-root.pem"
    cafile.write_text(pebble.issuing_root())
    certs = p.workdir / "state" / "certs"

    def serial(name: str) -> int:
        return leaf_and_chain(certs / name / "fullchain.pem")[0].serial_number

    def served(name: str) -> int | None:
        try:
            status, leaf, sock = tls_get(https_port, name, cafile)
            sock.close()
            return leaf.serial_number if status == 200 else None
        except (OSError, AssertionError):
            return None

    # each name gets its site's certificate, verified against the CA's root
    for name, stored_as in (("a.example.com", "a.example.com"), ("www.a.example.com", "a.example.com"),
                            ("b.example.com", "b.example.com")):
        assert wait_until(lambda: served(name) == serial(stored_as), timeout=5), name
    # plain HTTP: the challenge path is answered, everything else redirects
    token = "T" * 43
    (p.workdir / "state" / "acme" / "http-01" / token).write_text(token + ".thumbprint")
    with RawConn(http_port) as c:
        c.send(f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: a.example.com\r\n\r\n".encode())
        r = c.read_response()
        assert r.status == 200 and r.body == (token + ".thumbprint").encode()
        c.send(b"GET /x?y=1 HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        r = c.read_response()
        assert r.status in (301, 308) and r.header("Location") == f"https://a.example.com:{https_port}/x?y=1"

    # a connection opened before the renewal keeps its certificate and keeps working
    status, before, open_conn = tls_get(https_port, "a.example.com", cafile)
    assert status == 200
    old = serial("a.example.com")
    forced = porch_cli(p, "renew", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    new = serial("a.example.com")
    assert new != old
    assert wait_until(lambda: served("a.example.com") == new, timeout=5)  # no restart
    status, still, _ = tls_get(https_port, "a.example.com", cafile, sock=open_conn)
    assert status == 200 and still.serial_number == before.serial_number == old
    open_conn.close()
    assert p.managed.running()


def test_with_workers_the_supervisor_issues_once_and_a_reload_adds_a_site(acme, porch, upstream):
    """Two workers answer challenges; only the supervisor's manager issues.  A site
    added by `porch reload` gets its certificate without a restart."""
    pebble, http_port = acme()
    up = upstream()
    one = SITES.format(up=up.url).split("\n\n[[site]]")[0]
    p = porch(one, workers=2, **acme_keys(pebble, http_port))
    p.wait_workers(2)
    wait_valid(p, "a.example.com")
    p.write_config(one + f'\n[[site]]\nhosts = ["c.example.com"]\nproxy = "{up.url}"\ntls = "auto"\n')
    done = p.reload()
    assert done.returncode == 0, done.stdout + done.stderr
    wait_valid(p, "c.example.com")
    verify(pebble, p.workdir / "state" / "certs" / "c.example.com" / "fullchain.pem", "c.example.com")
    log = p.error_log_text()
    assert log.count("ACME: certificate stored site=a.example.com") == 1, log
    assert log.count("ACME: certificate stored site=c.example.com") == 1, log
    assert log.count("ACME: requesting certificate site=a.example.com") == 1, log  # not again on reload


def test_failed_renewal_keeps_the_old_certificate_serving(acme, porch, upstream, tmp_path):
    pebble, http_port = acme()
    up = upstream()
    keys = acme_keys(pebble, http_port)
    p = porch(SITES.format(up=up.url).split("\n\n[[site]]")[0], **keys)
    first = wait_valid(p, "a.example.com")
    cafile = tmp_path / "root.pem"
    cafile.write_text(pebble.issuing_root())
    chain = p.workdir / "state" / "certs" / "a.example.com" / "fullchain.pem"
    old = chain.read_bytes()

    def served() -> int | None:
        try:
            status, leaf, sock = tls_get(keys["https_port"], "a.example.com", cafile)
            sock.close()
            return leaf.serial_number
        except (OSError, AssertionError):
            return None

    serial = leaf_and_chain(chain)[0].serial_number
    assert wait_until(lambda: served() == serial, timeout=5)
    pebble.add_a("www.a.example.com", "127.0.0.2")  # one name stops validating
    failed = porch_cli(p, "renew", "--force")
    assert failed.returncode == 1
    assert "a.example.com: failed: ACME order for a.example.com, www.a.example.com: validation failed:" \
        " www.a.example.com: urn:ietf:params:acme:error:connection" in failed.stdout, failed.stdout
    meta = stored(p, "a.example.com")
    assert meta["state"] == "failing" and "www.a.example.com" in meta["last_error"]
    assert meta["not_after"] == first["not_after"]
    assert chain.read_bytes() == old and served() == serial  # the old one keeps serving
    listing = porch_cli(p).stdout
    assert "failing" in listing and "last error: ACME order for a.example.com" in listing
