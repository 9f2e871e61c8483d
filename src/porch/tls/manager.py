"""CertManager: keeps a valid ACME certificate for every site that wants one.

A background service on the supervisor's asyncio loop (one per Porch, whatever the
number of workers).  One task per site; each wakes up, reads what storage holds,
and if a certificate is missing, covers other names, or is due for renewal
(porch.tls.renewal), issues one under the site's storage lock, so that another
process (`porch certs renew`, a second Porch on the same state_dir) never issues
the same name at the same time.  The acme library blocks: its calls run in a
daemon thread, so a stop never waits for a CA.

Until a new certificate is stored, the old one stays in place and keeps serving;
meta.json says "renewing", then "valid", or "failing" with the CA's detail, and
failures are retried with backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from porch.config.model import Config, Site
from porch.observability.errorlog import ErrorLog
from porch.storage import FileStorage, StorageError
from porch.tls import certstore, renewal
from porch.tls.auto import acme_names, skipped_names, wants_acme
from porch.tls.certstore import Meta, Stored

ISSUE_LOCK_TIMEOUT = 600.0  # another process issuing the same name: wait this long


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class _Ari:
    """The CA's renewal window for one certificate, as last fetched."""

    serial: int
    due: dt.datetime | None  # the moment picked in the window
    poll_after: dt.datetime


class CertManager:
    """See the module docstring.  `step()` is the blocking unit of work (the CLI
    calls it directly); `run()` schedules it for every ACME site until cancelled."""

    def __init__(self, config: Config, storage: FileStorage, log: ErrorLog, *,
                 fraction: float = renewal.RENEW_FRACTION, retry_base: float = renewal.RETRY_BASE,
                 retry_cap: float = renewal.RETRY_CAP, timeout: float = 90.0,
                 directory: str | None = None, dry_run: bool = False) -> None:
        from porch.tls.acme import CA, AcmeClient  # the acme library: only where it is used

        g = config.porch
        self.config = config
        self.storage = storage
        self.log = log
        self.fraction = fraction
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.dry_run = dry_run  # issue for real, store nothing, run no hook
        self.ca = CA(directory or g.acme_ca, g.acme_ca_root, g.email)
        # One client per site: sites are issued in parallel threads, and a client's
        # HTTP session and nonces are not for sharing between threads.
        self._client = lambda: AcmeClient(self.ca, storage, timeout=timeout)
        self._clients: dict[str, AcmeClient] = {}
        self._ari: dict[str, _Ari] = {}
        # acme_challenge_type "auto": the type that last validated a site goes first
        self._worked: dict[str, str] = {}
        # what the last step did per site name, for `porch certs renew`:
        # "issued" / "renewed" / "dry run ok" / "not due" / "failed", and a detail
        self.outcomes: dict[str, tuple[str, str]] = {}

    def client(self, name: str):  # -> porch.tls.acme.AcmeClient
        if name not in self._clients:
            self._clients[name] = self._client()
        return self._clients[name]

    @property
    def sites(self) -> list[Site]:
        return [site for site in self.config.sites if wants_acme(site)]

    # -- the service ---------------------------------------------------------------

    async def run(self) -> None:
        """Keep every ACME site's certificate until cancelled."""
        for site in self.config.sites:
            if skipped_names(site):
                self.log.warn("ACME: no certificate for wildcard or IP names (HTTP-01 cannot"
                              " validate them; give the site tls = { cert, key } files)",
                              site=site.name, names=" ".join(skipped_names(site)))
        await asyncio.gather(*(self._keep(site) for site in self.sites))

    async def _keep(self, site: Site) -> None:
        while True:
            try:
                delay = await _in_thread(self.step, site)
            except Exception as e:  # a bug or a broken disk: log, never stop the others
                self.log.error(f"ACME: certificate manager failed: {e!r}", site=site.name)
                delay = self.retry_cap
            await asyncio.sleep(max(1.0, delay))

    # -- one look at one site ------------------------------------------------------

    def step(self, site: Site, force: bool = False, retry_now: bool = False) -> float:
        """Issue or renew `site`'s certificate if it is due (or `force`); return the
        seconds until it should be looked at again.  `retry_now` skips the wait
        after a failure (a person running `porch certs renew` wants to see it now)."""
        name = site.name
        stored = certstore.read(self.storage, name)
        due = self.due(stored, site, retry_now)
        if not force and due > _now():
            self.outcomes[name] = ("not due", f"renewal from {certstore.iso(due)}")
            if stored.meta is not None and stored.meta.state == "renewing" and not self.dry_run:
                self._settle(name)
            return self._wait(due)
        try:
            with self.storage.lock(certstore.lock_key(name), timeout=ISSUE_LOCK_TIMEOUT):
                stored = certstore.read(self.storage, name)  # another process may have renewed
                due = self.due(stored, site, retry_now)
                if not force and due > _now():
                    self.outcomes[name] = ("not due", f"renewal from {certstore.iso(due)}")
                    return self._wait(due)
                return self._issue(site, stored)
        except StorageError as e:
            self.log.error(f"ACME: {e}", site=name)
            self.outcomes[name] = ("failed", str(e))
            return self._retry_delay(1)

    def _settle(self, name: str) -> None:
        """A "renewing" left by a process that died mid-renewal: back to "valid" once
        nobody holds the lock (the files are the last good ones)."""
        try:
            with self.storage.lock(certstore.lock_key(name), timeout=0):
                stored = certstore.read(self.storage, name)
                if stored.meta is not None and stored.meta.state == "renewing":
                    certstore.write_meta(self.storage, name, stored.meta.with_(state="valid"))
        except StorageError:
            pass  # someone is renewing right now: their state is the right one

    def due(self, stored: Stored, site: Site, retry_now: bool = False) -> dt.datetime:
        """When the site's certificate must be (re)issued: now if missing or for other
        names; the renewal moment otherwise; not before the next retry when failing
        (unless `retry_now`)."""
        now = _now()
        meta, cert = stored.meta, stored.cert
        if cert is None or set(certstore.names_of(cert)) != set(acme_names(site)):
            when = now
        else:
            when = renewal.lifetime_due(cert.not_valid_before_utc, cert.not_valid_after_utc, self.fraction)
            ari = self._ari_due(stored.name, stored.fullchain or b"", cert)
            if ari is not None:
                when = min(when, ari)
        failing = meta is not None and meta.state == "failing" and not retry_now
        retry = certstore.parse_iso(meta.next_attempt) if failing else None
        return max(when, retry) if retry else when

    def _ari_due(self, name: str, fullchain: bytes, cert) -> dt.datetime | None:
        """The ARI moment for this certificate, fetched again when the CA said so."""
        from porch.tls.acme import AcmeError

        now = _now()
        known = self._ari.get(name)
        if known is not None and known.serial == cert.serial_number and now < known.poll_after:
            return known.due
        if cert.not_valid_after_utc <= now:  # RFC 9773 4.3: never for expired certificates
            return None
        try:
            window = self.client(name).renewal_window(fullchain)
        except AcmeError as e:
            self.log.warn(f"ACME renewal information unavailable: {e}", site=name)
            window = None
        due, poll = None, now + dt.timedelta(hours=6)
        if window is not None:
            start, end, wait = window
            due = now if start <= now else renewal.ari_pick(start, end)
            poll = now + dt.timedelta(seconds=wait)
        self._ari[name] = _Ari(cert.serial_number, due, poll)
        return due

    def _wait(self, due: dt.datetime) -> float:
        return min((due - _now()).total_seconds(), renewal.LOOK_AGAIN)

    def _retry_delay(self, attempts: int) -> float:
        return renewal.backoff(attempts, self.retry_base, self.retry_cap)

    def _issue(self, site: Site, stored: Stored) -> float:
        """Under the lock: get a certificate, store it, deploy it; the next look's delay."""
        from porch.tls.acme import AcmeError

        name, names = site.name, acme_names(site)
        meta = stored.meta or Meta(names=names, ca=self.ca.directory)
        renewing = stored.cert is not None
        if renewing and not self.dry_run:
            certstore.write_meta(self.storage, name, meta.with_(state="renewing"))
        what = "renewing" if renewing else "requesting"
        self.log.info(f"ACME: {what} certificate{' (dry run)' if self.dry_run else ''}",
                      site=name, names=" ".join(names), ca=self.ca.directory)
        try:
            issued = self._issue_with_fallback(name, names)
        except AcmeError as e:
            return self._failed(site, meta, str(e))
        if self.dry_run:
            self.log.info("ACME: dry run succeeded; nothing stored", site=name)
            self.outcomes[name] = ("dry run ok", f"the CA would issue for {' '.join(names)}")
            return 0.0
        meta = certstore.write_certificate(self.storage, name, issued.fullchain, issued.key,
                                           meta.with_(names=names, ca=self.ca.directory))
        self._ari.pop(name, None)
        self.outcomes[name] = ("renewed" if renewing else "issued", f"valid until {meta.not_after}")
        self.log.info("ACME: certificate stored", site=name, names=" ".join(names),
                      issuer=meta.issuer, not_after=meta.not_after)
        self._deploy(site, meta)
        return self._wait(self.due(certstore.read(self.storage, name), site))

    def challenge_types(self, name: str) -> tuple[str, ...]:
        """The challenge types to try for site `name`, in order (acme_challenge_type)."""
        from porch.tls.acme import HTTP_01, TLS_ALPN_01

        kind = self.config.porch.acme_challenge_type
        if kind != "auto":
            return (kind,)
        first = self._worked.get(name, HTTP_01)
        return (first, TLS_ALPN_01 if first == HTTP_01 else HTTP_01)

    def _issue_with_fallback(self, name: str, names: tuple[str, ...]):
        """Issue over the first challenge type; when the CA cannot validate with it,
        a new order over the next one at once (a failed authorization fails its
        order, RFC 8555 section 7.1.6).  Raises AcmeError; when every type failed,
        its message has each one's detail, in order."""
        from porch.tls.acme import ChallengeFailed

        kinds = self.challenge_types(name)
        failures: list[str] = []
        for i, kind in enumerate(kinds):
            try:
                issued = self.client(name).issue(names, kind)
            except ChallengeFailed as e:
                failures.append(str(e) if i == 0 else f"then over {kind}: {e}")
                if i + 1 == len(kinds):
                    raise ChallengeFailed("; ".join(failures)) from None
                self.log.warn(f"ACME: {kind} failed, trying {kinds[i + 1]}: {e}", site=name)
                continue
            self._worked[name] = kind
            return issued
        raise AssertionError("unreachable")

    def _failed(self, site: Site, meta: Meta, error: str) -> float:
        attempts = meta.attempts + 1
        delay = self._retry_delay(attempts)
        retry_at = _now() + dt.timedelta(seconds=delay)
        self.log.error(f"ACME: certificate not obtained: {error}", site=site.name,
                       attempt=attempts, retry_in=f"{delay:.0f}s")
        self.outcomes[site.name] = ("failed", error)
        if not self.dry_run:
            certstore.write_meta(self.storage, site.name, meta.with_(
                state="failing", last_error=error, attempts=attempts,
                next_attempt=certstore.iso(retry_at)))
        return delay

    def _deploy(self, site: Site, meta: Meta) -> None:
        from porch.tls.deploy import deploy

        command = site.on_certificate or self.config.porch.on_certificate
        if not site.bundles and not command:
            return
        problem = deploy(self.storage, site.name, meta, site.bundles, command)
        if problem:
            self.log.error(f"ACME: deploy failed (retried at the next renewal): {problem}", site=site.name)
            done, detail = self.outcomes.get(site.name, ("issued", ""))
            self.outcomes[site.name] = (done, f"{detail}; deploy failed: {problem}")
        else:
            self.log.info("ACME: deployed", site=site.name, bundles=len(site.bundles),
                          hook="yes" if command else "no")
        if problem != meta.deploy_error:
            certstore.write_meta(self.storage, site.name, meta.with_(deploy_error=problem))


class AcmeService:
    """The CertManager as a supervisor service (server/services.py: start, reload,
    stop).  A reload starts a manager for the new config; an issuance already under
    way finishes in its thread, and the new manager waits for its storage lock."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.storage: FileStorage | None = None
        self.log: ErrorLog | None = None

    async def start(self, config: Config, storage: Any, log: ErrorLog) -> None:
        self.storage = storage if isinstance(storage, FileStorage) else FileStorage(config.porch.state_dir)
        self.log = log
        self._begin(config)

    async def reload(self, config: Config) -> None:
        self._cancel()
        self._begin(config)

    async def stop(self) -> None:
        self._cancel()

    def _begin(self, config: Config) -> None:
        if self.storage is None or self.log is None or not any(wants_acme(s) for s in config.sites):
            return
        manager = CertManager(config, self.storage, self.log)
        self.task = asyncio.get_running_loop().create_task(manager.run(), name="porch-acme")

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a daemon thread: unlike the default executor, a stop of Porch
    never waits for a CA that is slow to answer."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def work() -> None:
        try:
            result: tuple[bool, Any] = (True, fn(*args))
        except Exception as e:
            result = (False, e)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(settle, *result)

    threading.Thread(target=work, daemon=True, name="porch-acme").start()
    return await future
