"""`porch certs`: every certificate Porch serves (ACME, local CA, files), and
`porch certs renew [--force] [--dry-run]`.

The table reads storage, the config and the files it names (never a running Porch),
so it works while Porch runs, and on a machine where it does not.  `renew` does what
the CertManager does, in this process, under the same storage locks: a running Porch
answers the HTTP-01 challenges (its workers read the key authorizations from storage)
and picks the new files up without restart.
`--dry-run` is certbot's: against Let's Encrypt's staging CA when acme_ca is
Let's Encrypt, else against acme_ca itself; nothing is stored and no hook runs.
"""

from __future__ import annotations

import datetime as dt
import json

from cryptography import x509

from porch.config.model import LETSENCRYPT, LETSENCRYPT_STAGING, Config, Site, TlsFiles
from porch.storage import FileStorage, StorageError
from porch.tls import certstore
from porch.tls.auto import acme_names, wants_acme

_HEAD = ("NAMES", "SOURCE", "ISSUER", "NOT AFTER", "LEFT", "STATE")
# Under this, time left is shown in hours: the local CA's leaves live 24 hours.
HOURS_BELOW = dt.timedelta(days=2)

Row = tuple[tuple[str, ...], str | None]


def rows(config: Config, storage: FileStorage, now: dt.datetime) -> list[Row]:
    """One row per certificate: those in storage (ACME, local CA), then each site's
    own files, then sites still waiting for their first one; each with the error line
    to print under it, if any."""
    out = []
    seen = set()
    for name in certstore.list_names(storage):
        stored = certstore.read(storage, name)
        if stored.meta is None and stored.cert is None:
            continue
        seen.add(name)
        out.append(_row(stored, now))
    for site in config.sites:
        if isinstance(site.tls, TlsFiles):
            out.append(_files_row(site, site.tls, storage, now))
        elif wants_acme(site) and site.name not in seen:
            out.append(((", ".join(acme_names(site)), "acme", "-", "-", "-", "missing"), None))
        elif site.tls == "internal" and site.name not in seen:
            out.append(((", ".join(site.hosts), "internal", "-", "-", "-", "made when porch runs"), None))
    return out


def _files_row(site: Site, files: TlsFiles, storage: FileStorage, now: dt.datetime) -> Row:
    """`tls = { cert, key }`: read from the file itself, as the workers read it."""
    try:
        with open(files.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e)
        return (", ".join(site.hosts) or "*", "files", "-", "-", "-", "unreadable"), f"{files.cert}: {why}"
    not_after = cert.not_valid_after_utc
    row = (", ".join(certstore.names_of(cert) or site.hosts) or "*", "files", certstore.issuer_name(cert),
           certstore.iso(not_after), left(not_after, now), "expired" if not_after <= now else "valid")
    return row, _deploy_error(storage, site.name)


def _deploy_error(storage: FileStorage, name: str) -> str | None:
    from porch.tls.file_deploy import record_key

    try:
        error = json.loads(storage.get(record_key(name)) or b"{}").get("error")
    except (ValueError, StorageError):
        return None
    return f"deploy: {error}" if error else None


def left(not_after: dt.datetime, now: dt.datetime) -> str:
    """Time left as "89d", or "23h" under two days (a day count would say 0); "-" if gone."""
    remaining = not_after - now
    if remaining.total_seconds() <= 0:
        return "-"
    if remaining < HOURS_BELOW:
        return f"{int(remaining.total_seconds() // 3600)}h"
    return f"{remaining.days}d"


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
    errors = [e for e in ((meta.last_error if meta and meta.state == "failing" else None),
                          (f"deploy: {meta.deploy_error}" if meta and meta.deploy_error else None)) if e]
    row = (", ".join(names), meta.source if meta else "-", issuer or "-",
           certstore.iso(not_after) if not_after else "-", left(not_after, now) if not_after else "-", state)
    return row, "; ".join(errors) or None


def table(config: Config, storage: FileStorage, now: dt.datetime | None = None) -> str:
    found = rows(config, storage, now or dt.datetime.now(dt.timezone.utc))
    if not found:
        return "no certificates (no site has HTTPS, and nothing is stored)"
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
