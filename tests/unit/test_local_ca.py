"""The local CA (tls/local_ca.py) and its leaves (tls/sources.py InternalSource): chain,
lifetimes, renewal when due, one root for several processes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import multiprocessing
import ssl

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from porch.storage import FileStorage
from porch.tls.contexts import CertSlot
from porch.tls.local_ca import INTERMEDIATE_CERT, ROOT_CERT, LocalCA, renew_at
from porch.tls.sources import InternalSource


def chain_of(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def verify(storage: FileStorage, chain_pem: bytes, name: str, when: dt.datetime | None = None) -> None:
    leaf, *rest = chain_of(chain_pem)
    root = x509.load_pem_x509_certificate(storage.get(ROOT_CERT))
    builder = PolicyBuilder().store(Store([root]))
    if when is not None:
        builder = builder.time(when)
    san = x509.IPAddress(ipaddress.ip_address(name)) if name[0].isdigit() else x509.DNSName(name)
    builder.build_server_verifier(san).verify(leaf, rest)


def test_leaf_chains_to_the_root_for_each_name(tmp_path):
    storage = FileStorage(tmp_path)
    leaf = LocalCA(storage).issue(("localhost", "app.test", "*.dev.test", "127.0.0.1"))
    for name in ("localhost", "app.test", "x.dev.test", "127.0.0.1"):
        verify(storage, leaf.chain_pem, name)
    life = leaf.cert.not_valid_after_utc - leaf.cert.not_valid_before_utc
    assert life <= dt.timedelta(hours=25)
    ctx = ssl.create_default_context(cafile=str(storage.path(ROOT_CERT)))  # Python's ssl agrees
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_intermediate_is_replaced_when_due_and_old_leaves_still_verify(tmp_path):
    storage = FileStorage(tmp_path)
    ca = LocalCA(storage)
    now = dt.datetime.now(dt.timezone.utc)
    old = ca.issue(("app.test",), now=now)
    first = storage.get(INTERMEDIATE_CERT)
    later = now + dt.timedelta(days=25)  # past two thirds of the intermediate's 30 days
    new = ca.issue(("app.test",), now=later)
    assert storage.get(INTERMEDIATE_CERT) != first
    assert chain_of(old.chain_pem)[1] != chain_of(new.chain_pem)[1]
    verify(storage, old.chain_pem, "app.test", when=now)
    verify(storage, new.chain_pem, "app.test", when=later)


def test_internal_source_renews_a_leaf_that_is_due_and_keeps_a_fresh_one(tmp_path):
    storage = FileStorage(tmp_path)
    source = InternalSource(CertSlot("app.test"), storage, "app.test", ("app.test",))
    source.renew()
    fresh = storage.get("certs/app.test/fullchain.pem")
    meta = json.loads(storage.get("certs/app.test/meta.json"))
    assert meta["source"] == "internal" and meta["state"] == "valid"
    assert storage.path("certs/app.test/privkey.pem").stat().st_mode & 0o777 == 0o600
    source.renew_at = 0
    source.renew()  # another worker's view: the stored leaf is fine, nothing issued
    assert storage.get("certs/app.test/fullchain.pem") == fresh
    # a leaf issued 20 hours ago is past two thirds of its life: replaced
    stale = LocalCA(storage).issue(("app.test",), now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=20))
    assert renew_at(stale.cert) < dt.datetime.now(dt.timezone.utc)
    storage.put("certs/app.test/fullchain.pem", stale.chain_pem)
    storage.put("certs/app.test/privkey.pem", stale.key_pem)
    source.renew()
    renewed = chain_of(storage.get("certs/app.test/fullchain.pem"))[0]
    assert renewed.serial_number != stale.cert.serial_number
    assert source.renew_at > dt.datetime.now(dt.timezone.utc).timestamp()


def _root_in_process(root: str, out) -> None:
    out.put(LocalCA(FileStorage(root)).root_pem())


def test_workers_starting_together_make_one_root(tmp_path):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_root_in_process, args=(str(tmp_path), out)) for _ in range(4)]
    for p in procs:
        p.start()
    roots = {out.get(timeout=20) for _ in procs}
    for p in procs:
        p.join(10)
    assert len(roots) == 1
    assert FileStorage(tmp_path).get(ROOT_CERT) in roots
