"""Bundles and `on_certificate` for sites with `tls = { cert, key }`.

Another program renews those files (certbot, as in the LibreTime guide), so the ACME
manager's deploy step (tls/manager.py) never runs for them.  This supervisor service
(server/services.py) does it, once per Porch whatever the number of workers:

- at start, and after every change of the files (a stat of each, once a second, as
  the workers' tls/sources.py does), it deploys when the certificate differs from
  the one it last deployed, or a bundle is missing or older than the certificate;
- it deploys only a pair that loads (key and certificate match): a writer caught
  between the key and the chain is waited for (sources.SETTLE_TIME) and a broken
  pair is logged and skipped until the next change;
- what it deployed last is kept in state_dir/deploy/<site>.json (SHA-256 of the
  certificate and key), so a restart does not run the hook again for the same files
  but a change made while Porch was stopped is deployed at start.  A failure is
  logged, kept there as `error`, and retried at the next change or start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

from porch.config.model import Config, Site, TlsFiles
from porch.observability.errorlog import ErrorLog
from porch.storage import FileStorage, StorageError
from porch.tls.contexts import CertSlot, TlsSettings, certificate_context
from porch.tls.deploy import deploy_pem
from porch.tls.sources import FileSource, Stamp

POLL_INTERVAL = 1.0  # seconds between two looks at the files


def record_key(name: str) -> str:
    return f"deploy/{name}.json"


@dataclass
class Target:
    """One site whose files have something to deploy."""

    site: Site
    source: FileSource
    command: str | None
    stamp: Stamp | None = None  # of the files when last looked at


def targets(config: Config) -> list[Target]:
    """The `tls = { cert, key }` sites with bundles or an on_certificate command."""
    out = []
    for site in config.sites:
        command = site.on_certificate or config.porch.on_certificate
        if isinstance(site.tls, TlsFiles) and (site.bundles or command):
            files = site.tls
            out.append(Target(site, FileSource(CertSlot(site.name), files.cert, files.key, files.chain), command))
    return out


class FileDeployer:
    """The blocking unit of work: `step(target)` looks at one site's files once."""

    def __init__(self, storage: FileStorage, log: ErrorLog) -> None:
        self.storage = storage
        self.log = log

    def step(self, target: Target) -> None:
        site, source = target.site, target.source
        try:
            certificate_context(TlsSettings(), source.cert, source.key, source.chain)
            cert, key = _read(source.cert), _read(source.key)
            chain = _read(source.chain) if source.chain else b""
        except (ssl.SSLError, OSError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            self.log.warn(f"certificate files do not load ({why}): bundles and on_certificate wait"
                          " for the next change", site=site.name)
            return
        digest = hashlib.sha256(cert + chain + b"\0" + key).hexdigest()
        last = self._record(site.name)
        if last.get("sha256") == digest and not last.get("error") and self._bundles_fresh(target):
            return
        problem = deploy_pem(_join(cert, chain), key, site.bundles, target.command, _env(site.name, source, cert))
        self._remember(site.name, digest, problem)
        if problem:
            self.log.error(f"certificate deploy failed (retried at the next change): {problem}", site=site.name)
        else:
            self.log.info("certificate deployed", site=site.name, source=source.describe,
                          bundles=len(site.bundles), hook="yes" if target.command else "no")

    def _bundles_fresh(self, target: Target) -> bool:
        """Every bundle exists and is newer than each certificate file."""
        try:
            newest = max(os.stat(path).st_mtime_ns for path in target.source.files())
            return all(os.stat(b.path).st_mtime_ns >= newest for b in target.site.bundles)
        except OSError:
            return False

    def _record(self, name: str) -> dict[str, Any]:
        try:
            raw = self.storage.get(record_key(name))
            return json.loads(raw) if raw else {}
        except (StorageError, ValueError):
            return {}

    def _remember(self, name: str, digest: str, problem: str | None) -> None:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        data = {"sha256": digest, "deployed_at": when, "error": problem}
        try:
            self.storage.put(record_key(name), json.dumps(data, indent=2).encode() + b"\n", 0o644)
        except StorageError as exc:
            self.log.error(f"cannot record the deploy: {exc}", site=name)


class FileDeployService:
    """FileDeployer as a supervisor service: start, reload, stop."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.deployer: FileDeployer | None = None
        self.targets: list[Target] = []

    async def start(self, config: Config, storage: Any, log: ErrorLog) -> None:
        storage = storage if isinstance(storage, FileStorage) else FileStorage(config.porch.state_dir)
        self.deployer = FileDeployer(storage, log)
        self._begin(config)

    async def reload(self, config: Config) -> None:
        self._cancel()
        self._begin(config)

    async def stop(self) -> None:
        self._cancel()

    def _begin(self, config: Config) -> None:
        self.targets = targets(config)
        if self.deployer is not None and self.targets:
            self.task = asyncio.get_running_loop().create_task(self._watch(), name="porch-file-deploy")

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _watch(self) -> None:
        from porch.tls.manager import _in_thread  # a daemon thread: a stop never waits for a hook

        assert self.deployer is not None
        while True:
            for target in self.targets:
                stamp = target.source.stamp()
                if stamp is None or stamp == target.stamp or target.source.settling(time.time()):
                    continue
                target.stamp = stamp
                try:
                    await _in_thread(self.deployer.step, target)
                except Exception as exc:  # a bug: say it, keep watching the others
                    self.deployer.log.error(f"certificate deploy failed: {exc!r}", site=target.site.name)
            await asyncio.sleep(POLL_INTERVAL)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _join(cert: bytes, chain: bytes) -> bytes:
    if not chain:
        return cert
    return (cert if cert.endswith(b"\n") else cert + b"\n") + chain


def _env(name: str, source: FileSource, cert: bytes) -> dict[str, str]:
    """deploy.py's hook variables, for files outside the storage."""
    from cryptography import x509

    from porch.tls.certstore import iso, names_of

    leaf = x509.load_pem_x509_certificate(cert)
    env = {
        "PORCH_SITE": name,
        "PORCH_CERT_NAMES": " ".join(names_of(leaf)),
        "PORCH_CERT_FULLCHAIN": source.cert,
        "PORCH_CERT_KEY": source.key,
        "PORCH_CERT_DIR": os.path.dirname(source.cert),
        "PORCH_CERT_NOT_AFTER": iso(leaf.not_valid_after_utc),
    }
    if source.chain:
        env["PORCH_CERT_CHAIN"] = source.chain
    return env
