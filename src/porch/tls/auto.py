"""Which sites get certificates from ACME, and for which names.

Light on purpose (no ACME library import): workers, the serving side and the CLI
ask it too.  The tls helper's defaults decide `tls` for sites that do not say
("auto" for public names); this module only reads `site.tls`.
"""

from __future__ import annotations

import ipaddress

from porch.config.model import Site


def wants_acme(site: Site) -> bool:
    """True when Porch's ACME manager keeps a certificate for `site`."""
    return site.tls == "auto" and bool(acme_names(site))


def acme_names(site: Site) -> tuple[str, ...]:
    """The site's names one HTTP-01 certificate can cover, in config order.

    Wildcards need DNS-01 (RFC 8555 8.4; Let's Encrypt refuses HTTP-01 for them) and
    IP addresses need RFC 8738 identifiers few CAs issue: both are left out, see
    `skipped_names`.
    """
    return tuple(h for h in site.hosts if not _skipped(h))


def skipped_names(site: Site) -> tuple[str, ...]:
    """Names of an "auto" site that its ACME certificate cannot cover (logged once)."""
    return tuple(h for h in site.hosts if _skipped(h)) if site.tls == "auto" else ()


def _skipped(host: str) -> bool:
    if host.startswith("*."):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
