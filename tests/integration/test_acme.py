"""ACME against pebble: issuance over HTTP-01 with Porch answering the challenges on
its http_port, the challenge path, failures with the CA's detail, renewal, hooks."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from .helpers import RawConn, free_port, wait_until
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
    return {"http_port": http_port, "acme_ca": pebble.directory,
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
    # the site still proxies over plain HTTP (tls helper adds the redirect)
    with RawConn(http_port) as c:
        c.send(b"GET /x HTTP/1.1\r\nHost: b.example.com\r\n\r\n")
        assert c.read_response().status == 200


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
