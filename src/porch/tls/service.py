"""The HTTPS side of one runtime, built from the config: slots, sources, SNI table.

`build_tls(config, log)` returns None when no site has TLS (nothing listens on
https_port then), else a `TlsService`: the listening context for the HTTPS sockets,
each site's `CertSlot` (for the request phase in policies/https.py), and `refresh()`
for the server's sweeper.
"""

from __future__ import annotations

import time

from porch.config.errors import ConfigError
from porch.config.model import Config, Site, TlsFiles
from porch.observability.errorlog import ErrorLog
from porch.storage import FileStorage, StorageError
from porch.tls.contexts import CertSlot, SniTable, TlsFront, TlsSettings
from porch.tls.sources import FileSource, InternalSource, Source, StoreSource, Watcher
from porch.tls.tickets import TicketKeys

# A refused handshake is logged at most this often per name (scanners send many).
REFUSAL_LOG_INTERVAL = 60.0


class TlsService:
    def __init__(self, front: TlsFront, watcher: Watcher, slots: dict[str, CertSlot],
                 tickets: TicketKeys | None = None) -> None:
        self.front = front
        self.context = front.context
        self.watcher = watcher
        self.slots = slots  # by Site.key_path
        self.tickets = tickets
        self.failed_at = -REFUSAL_LOG_INTERVAL

    def refresh(self) -> None:
        """Called by the server's sweeper: never lets an error escape into it (the
        sweeper also enforces every connection's deadlines)."""
        try:
            self.watcher.refresh()
            if self.tickets is not None and self.tickets.rotate():
                for ctx in (self.context, *(s.context for s in self.slots.values() if s.context)):
                    self.tickets.install(ctx)
        except Exception as exc:  # a bug, or a storage failure not foreseen: say it, go on
            now = time.monotonic()
            if now - self.failed_at >= REFUSAL_LOG_INTERVAL:  # not twice a second
                self.failed_at = now
                self.watcher.log.error(f"TLS certificate check failed: {exc!r}")


def build_tls(config: Config, log: ErrorLog, ticket_secret: bytes | None = None) -> TlsService | None:
    """Raises ConfigError when a site's certificate files do not load (fatal at start).
    `ticket_secret`: the supervisor's, shared by its workers (tls/tickets.py); None:
    each context keeps OpenSSL's own ticket key."""
    sites = [site for site in config.sites if site.tls != "off"]
    if not sites:
        return None
    g = config.porch
    tickets = TicketKeys(ticket_secret) if ticket_secret else None
    if tickets is not None and not tickets.shared:  # the supervisor checked: not expected
        log.warn(f"TLS session tickets: each worker keeps its own key ({tickets.problem})")
        tickets = None
    settings = TlsSettings(g.tls_protocols, g.tls_ciphers, g.http2)
    storage = FileStorage(g.state_dir)
    slots: dict[str, CertSlot] = {}
    sources: list[Source] = []
    for site in sites:
        slot = slots[site.key_path] = CertSlot(site.name)
        source = _source(site, slot, storage)
        source.where = f"{site.key_path}.tls"
        sources.append(source)
    watcher = Watcher(settings, sources, log, tickets)
    try:
        problems = watcher.load_all()
    except StorageError as exc:
        problems = [str(exc)]
    if problems:
        raise ConfigError(problems)
    table = SniTable.build([(site.hosts, slots[site.key_path]) for site in sites])
    return TlsService(TlsFront(settings, table, _refusal_logger(log), tickets), watcher, slots, tickets)


def _source(site: Site, slot: CertSlot, storage: FileStorage) -> Source:
    if isinstance(site.tls, TlsFiles):
        return FileSource(slot, site.tls.cert, site.tls.key, site.tls.chain)
    if site.tls == "internal":
        return InternalSource(slot, storage, site.name, site.hosts)
    return StoreSource(slot, storage, site.name)


def _refusal_logger(log: ErrorLog):
    last: dict[str | None, float] = {}

    def refused(name: str | None, slot: CertSlot | None) -> None:
        now = time.monotonic()
        key = slot.site if slot is not None else name
        if now - last.get(key, -REFUSAL_LOG_INTERVAL) < REFUSAL_LOG_INTERVAL:
            return
        if len(last) > 1000:
            last.clear()
        last[key] = now
        if slot is not None:
            log.warn(f"TLS handshake refused: site {slot.site} is still waiting for its certificate",
                     sni=name or "-")
        elif name is None:
            log.info("TLS handshake refused: no server name (SNI) and no default certificate")
        else:
            log.info("TLS handshake refused: no site for this server name (SNI)", sni=name)

    return refused
