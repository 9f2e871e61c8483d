"""`porch certs`: what storage holds, and `porch certs renew [--force] [--dry-run]`.

The table reads only storage (and the config, for sites still waiting for their
first certificate), so it works while Porch runs, and on a machine where it does
not.  `renew` does what the CertManager does, in this process, under the same
storage locks: a running Porch answers the HTTP-01 challenges (its workers read the
key authorizations from storage) and picks the new files up without restart.
`--dry-run` is certbot's: against Let's Encrypt's staging CA when acme_ca is
Let's Encrypt, else against acme_ca itself; nothing is stored and no hook runs.
"""

from __future__ import annotations

import datetime as dt

from porch.config.model import LETSENCRYPT, LETSENCRYPT_STAGING, Config
from porch.storage import FileStorage
from porch.tls import certstore
from porch.tls.auto import acme_names, wants_acme

_HEAD = ("NAMES", "SOURCE", "ISSUER", "NOT AFTER", "DAYS", "STATE")


def rows(config: Config, storage: FileStorage, now: dt.datetime) -> list[tuple[tuple[str, ...], str | None]]:
    """One row per certificate (stored ones, then ACME sites with nothing stored yet),
    each with the error line to print under it, if any."""
    out = []
    seen = set()
    for name in certstore.list_names(storage):
        stored = certstore.read(storage, name)
        if stored.meta is None and stored.cert is None:
            continue
        seen.add(name)
        out.append(_row(stored, now))
    for site in config.sites:
        if wants_acme(site) and site.name not in seen:
            out.append(((", ".join(acme_names(site)), "acme", "-", "-", "-", "missing"), None))
    return out


def _row(stored: certstore.Stored, now: dt.datetime) -> tuple[tuple[str, ...], str | None]:
    meta, cert = stored.meta, stored.cert
    names = meta.names if meta else certstore.names_of(cert) if cert else (stored.name,)
    not_after = cert.not_valid_after_utc if cert else certstore.parse_iso(meta.not_after if meta else None)
    issuer = certstore.issuer_name(cert) if cert else (meta.issuer if meta else None)
    state = meta.state if meta else "valid"
    if not_after is not None and not_after <= now:
        state = "expired"
    elif cert is None and state == "failing":
        state = "failing (none yet)"
    days = str((not_after - now).days) if not_after else "-"
    errors = [e for e in ((meta.last_error if meta and meta.state == "failing" else None),
                          (f"deploy: {meta.deploy_error}" if meta and meta.deploy_error else None)) if e]
    row = (", ".join(names), meta.source if meta else "-", issuer or "-",
           certstore.iso(not_after) if not_after else "-", days, state)
    return row, "; ".join(errors) or None


def table(config: Config, storage: FileStorage, now: dt.datetime | None = None) -> str:
    found = rows(config, storage, now or dt.datetime.now(dt.timezone.utc))
    if not found:
        return "no certificates (no site has tls = \"auto\", and nothing is stored)"
    widths = [max(len(r[i]) for r in [_HEAD, *(row for row, _ in found)]) for i in range(len(_HEAD))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_HEAD, widths)).rstrip()]
    for row, error in found:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if error:
            lines.append(f"    last error: {error}")
    return "\n".join(lines)


def renew(config: Config, *, force: bool, dry_run: bool) -> int:
    """Renew the certificates that are due (all with `force`); 1 if any failed."""
    from porch.observability.errorlog import ErrorLog
    from porch.tls.manager import CertManager

    ca = config.porch.acme_ca
    directory = LETSENCRYPT_STAGING if dry_run and ca == LETSENCRYPT else ca
    manager = CertManager(config, FileStorage(config.porch.state_dir), ErrorLog("-"),
                          directory=directory, dry_run=dry_run)
    sites = manager.sites
    if not sites:
        print('no site gets ACME certificates (tls = "auto")')
        return 0
    if dry_run:
        print(f"dry run against {directory}: certificates are requested, nothing is stored")
    failed = 0
    for site in sites:
        manager.step(site, force=force or dry_run, retry_now=True)
        outcome, detail = manager.outcomes.get(site.name, ("failed", "no outcome"))
        failed += outcome == "failed"
        print(f"{site.name}: {outcome}: {detail}")
    return 1 if failed else 0
