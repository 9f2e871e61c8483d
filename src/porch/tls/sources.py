"""Where each HTTPS site's certificate comes from, and noticing when it changes.

- `FileSource`: `tls = { cert, key }`, files another program writes (certbot);
- `StoreSource`: `tls = "auto"`, the ACME manager's files `certs/<site>/fullchain.pem`
  and `privkey.pem` in the storage (the contract in notes/who.md);
- `InternalSource`: `tls = "internal"`, leaves from the local CA written in that same
  layout (with meta.json, so `porch certs` lists them), renewed when due.

`Watcher.refresh()` runs in the server's sweeper, twice a second: per site a stat of
two files (storage.modified), and a context is built only when the stamp changed.
Handshakes after a swap get the new certificate; open connections keep theirs.  A pair
that does not load (the certificate replaced before the key, a typo) is logged and
the old context keeps serving; the next change is tried again.
"""

from __future__ import annotations

import json
import os
import ssl
import time

from porch.observability.errorlog import ErrorLog
from porch.storage import FileStorage, StorageError
from porch.tls.contexts import CertSlot, TlsSettings, certificate_context
from porch.tls.local_ca import LocalCA, renew_at

Stamp = tuple
# certbot and the ACME manager write the key, then the chain: a pair caught between
# the two does not load; it is tried again at the next sweep, quietly, this long.
SETTLE_TIME = 2.0


class Source:
    """Base: `stamp()` is cheap; `paths()` names the PEM files to load."""

    slot: CertSlot
    describe = ""
    where = ""  # the config key, for errors at start: "site[0].tls"
    chain: str | None = None  # intermediates in a file of their own (FileSource)

    def stamp(self) -> Stamp | None:  # None: nothing there (yet)
        raise NotImplementedError

    def paths(self) -> tuple[str, str]:
        raise NotImplementedError

    def due(self, now: float) -> bool:  # a certificate to make before loading
        return False

    def renew(self) -> None:
        pass

    def renew_failed(self, now: float) -> None:
        pass

    def settling(self, now: float) -> bool:
        """True while the files were changed in the last moments: a writer may be
        between the key and the chain (a failed load then is retried, not logged)."""
        try:
            newest = max(os.stat(path).st_mtime for path in self.files())
        except OSError:
            return False
        return now - newest < SETTLE_TIME

    def files(self) -> tuple[str, ...]:
        """Every file the certificate is read from."""
        return self.paths() + ((self.chain,) if self.chain else ())


class FileSource(Source):
    def __init__(self, slot: CertSlot, cert: str, key: str, chain: str | None = None) -> None:
        self.slot = slot
        self.cert, self.key, self.chain = cert, key, chain
        self.describe = f"files {cert}, {key}" + (f", chain {chain}" if chain else "")

    def stamp(self) -> Stamp | None:
        out = []
        for path in self.files():
            try:
                st = os.stat(path)
            except OSError:
                return None
            out += (st.st_mtime_ns, st.st_ino, st.st_size)
        return tuple(out)

    def paths(self) -> tuple[str, str]:
        return self.cert, self.key


class StoreSource(Source):
    """The certs/<site>/ files in a FileStorage (ACME writes them; so does InternalSource)."""

    def __init__(self, slot: CertSlot, storage: FileStorage, name: str) -> None:
        self.slot = slot
        self.storage = storage
        self.chain_key = f"certs/{name}/fullchain.pem"
        self.key_key = f"certs/{name}/privkey.pem"
        self.meta_key = f"certs/{name}/meta.json"
        self.describe = f"ACME files in {storage.path(f'certs/{name}')}/"

    def stamp(self) -> Stamp | None:
        chain, key = self.storage.modified(self.chain_key), self.storage.modified(self.key_key)
        return None if chain is None or key is None else (chain, key)

    def paths(self) -> tuple[str, str]:
        return str(self.storage.path(self.chain_key)), str(self.storage.path(self.key_key))


class InternalSource(StoreSource):
    def __init__(self, slot: CertSlot, storage: FileStorage, name: str, names: tuple[str, ...]) -> None:
        super().__init__(slot, storage, name)
        self.ca = LocalCA(storage)
        self.names = names
        self.renew_at = 0.0  # wall clock; 0: look at what the storage holds
        self.describe = f"local CA, leaf in {storage.path(f'certs/{name}')}/"

    def due(self, now: float) -> bool:
        return now >= self.renew_at

    def renew(self) -> None:
        """Issue a leaf unless the stored one (maybe from another worker) is still good."""
        with self.storage.lock(self.chain_key.rsplit("/", 1)[0]):
            current = self._stored()
            if current is None or time.time() >= current:
                leaf = self.ca.issue(self.names)
                self.storage.put(self.key_key, leaf.key_pem, mode=0o600)
                self.storage.put(self.chain_key, leaf.chain_pem, mode=0o644)
                meta = {
                    "names": list(self.names), "source": "internal",
                    "issuer": leaf.cert.issuer.rfc4514_string(),
                    "not_after": leaf.cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
                    "state": "valid", "last_error": None,
                }
                self.storage.put(self.meta_key, json.dumps(meta, indent=2).encode() + b"\n", mode=0o644)
                current = renew_at(leaf.cert).timestamp()
        self.renew_at = current

    def renew_failed(self, now: float) -> None:
        self.renew_at = now + 60  # once a minute, not at every sweep

    def _stored(self) -> float | None:
        """When the stored leaf is due (None: missing, or not for our names)."""
        from cryptography import x509

        pem = self.storage.get(self.chain_key)
        meta = self.storage.get(self.meta_key)
        if pem is None or meta is None or self.storage.get(self.key_key) is None:
            return None
        try:
            if sorted(json.loads(meta).get("names", [])) != sorted(self.names):
                return None
            return renew_at(x509.load_pem_x509_certificate(pem)).timestamp()
        except ValueError:
            return None


class Watcher:
    """Keeps every slot's context in step with its source."""

    def __init__(self, settings: TlsSettings, sources: list[Source], log: ErrorLog, tickets=None) -> None:
        self.settings = settings
        self.sources = sources
        self.log = log
        self.tickets = tickets  # tls/tickets.py TicketKeys: every context gets the shared key
        self.stamps: dict[int, Stamp | None] = {}

    def load_all(self) -> list[str]:
        """At start: load what is there.  Returns the problems of file sources, which
        are fatal at start (nginx refuses to start on a bad ssl_certificate too)."""
        problems = []
        for source in self.sources:
            err = self._refresh(source, time.time(), settle=False)
            if err and isinstance(source, FileSource):
                problems.append(f"{source.where}: {err.split(': ', 1)[1]}")
            elif source.slot.context is None:
                self.log.info(f"site {source.slot.site}: waiting for its certificate"
                              f" ({source.describe}); HTTPS handshakes for it are refused until then")
        return problems

    def refresh(self) -> None:
        now = time.time()
        for source in self.sources:
            self._refresh(source, now)

    def _refresh(self, source: Source, now: float, settle: bool = True) -> str | None:
        slot = source.slot
        try:
            if source.due(now):
                source.renew()
            stamp = source.stamp()
        except (StorageError, OSError, ValueError) as exc:
            source.renew_failed(now)
            return self._failed(source, f"cannot renew or read its certificate: {exc}")
        if stamp is None or stamp == self.stamps.get(id(source), ()):
            return None
        self.stamps[id(source)] = stamp
        try:
            ctx = certificate_context(self.settings, *source.paths(), source.chain)
        except (ssl.SSLError, OSError) as exc:
            if settle and source.settling(now):
                del self.stamps[id(source)]  # try again at the next sweep
                return None
            why = getattr(exc, "reason", None) or exc.strerror or str(exc)
            return self._failed(source, f"cannot load {' and '.join(source.files())}: {why}")
        if self.tickets is not None:
            self.tickets.install(ctx)
        first = slot.context is None
        slot.context = ctx
        self.log.info(f"site {slot.site}: {'certificate loaded' if first else 'new certificate in use'}",
                      source=source.describe, not_after=_not_after(source.paths()[0]))
        return None

    def _failed(self, source: Source, message: str) -> str:
        keeping = "; the previous certificate keeps serving" if source.slot.context is not None else ""
        self.log.error(f"site {source.slot.site}: {message}{keeping}")
        return f"site {source.slot.site}: {message}"


def _not_after(path: str) -> str:
    try:
        from cryptography import x509

        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OSError, ValueError):
        return "?"

