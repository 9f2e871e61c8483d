"""Which host names can get a certificate from a public CA, and which cannot.

Public ACME CAs only issue for names in the public DNS.  localhost, IP addresses
and the special-use / private suffixes below never qualify (RFC 6761 .localhost
and .test, RFC 6762 .local, RFC 8375 .home.arpa, ICANN's .internal); nor does a
single-label name such as a docker service name ("app").  Caddy draws the same
line (certmagic.SubjectQualifiesForPublicCert) to pick its internal issuer.
"""

from __future__ import annotations

import ipaddress

LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".test", ".home.arpa")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_local(name: str) -> bool:
    """True for a host (lowercase, as in `Site.hosts`, "*." allowed) that no public
    CA will certify; Porch's local CA serves those."""
    bare = name[2:] if name.startswith("*.") else name
    if bare == "localhost" or is_ip(bare) or "." not in bare:
        return True
    return bare.endswith(LOCAL_SUFFIXES) or bare in {s[1:] for s in LOCAL_SUFFIXES}
