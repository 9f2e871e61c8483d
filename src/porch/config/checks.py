"""Checks run once on the built model, whatever front-end built it.

A front-end (porch.toml today; nginx and Apache subsets later) reads its syntax and
reports what it cannot read; what needs the whole model, or the machine (files on
disk, ports), is checked here, once, after it.  `checked(config)` raises ConfigError
with the problems (the config cannot be served) and returns the config with its
warnings (it can, but a person should hear about it: `porch check` prints them,
`porch run` logs them).  Each line names the key path, the value and the fix, as
ConfigError's problems do.
"""

from __future__ import annotations

import re
from dataclasses import replace

from porch.config.errors import ConfigError, Origins, locate
from porch.config.model import Config, Site, TlsFiles
from porch.policies import registry

Lines = list[str]


def checked(config: Config, origins: Origins | None = None) -> Config:
    """`config` with its warnings; raises ConfigError if a check found a problem
    (with the origin of its key path in `origins`, when the front-end gave one)."""
    problems: Lines = []
    warnings: Lines = list(config.warnings)
    for site in config.sites:
        if isinstance(site.tls, TlsFiles):
            _tls_files(site, problems, warnings)
    warnings += acme_port_warnings(config)
    warnings += _policy_warnings(config)
    if problems:
        raise ConfigError(problems, [locate(origins or {}, line.partition(": ")[0]) for line in problems])
    return replace(config, warnings=tuple(warnings))


def _tls_files(site: Site, problems: Lines, warnings: Lines) -> None:
    """The certificate, key and chain load together as the server will load them."""
    from porch.tls.pemcheck import check_pair  # cryptography: only for sites with files

    assert isinstance(site.tls, TlsFiles)
    found = check_pair(site.tls.cert, site.tls.key, site.tls.chain)
    where = f"{site.key_path}.tls"
    problems += [f"{where}.{key}: {text}" if key else f"{where}: {text}" for key, text in found.problems]
    warnings += [f"{where}.{key}: {text}" if key else f"{where}: {text}" for key, text in found.warnings]


def _policy_warnings(config: Config) -> Lines:
    """What the policies warn about (policies/registry.py), once each: a [porch] value
    that every route inherits is named where it is first met."""
    out: Lines = []
    seen: set[str] = set()
    for site in config.sites:
        for where, policies in [(site.key_path, site.policies), *((r.key_path, r.policies) for r in site.routes)]:
            for line in registry.warnings(where, policies):
                text = line.partition(": ")[2]
                if text not in seen:
                    seen.add(text)
                    out.append(line)
    return out


def acme_port_warnings(config: Config) -> Lines:
    """The CA sends HTTP-01 to port 80 (RFC 8555 section 8.3) and TLS-ALPN-01 to port
    443 (RFC 8737 section 3), whatever Porch listens on: an "auto" site whose
    challenge goes to a port Porch does not serve gets a certificate only if
    something forwards that port to Porch (acme_challenge_type says which)."""
    from porch.tls.auto import acme_names, wants_acme

    g = config.porch
    kind, http, https = g.acme_challenge_type, g.http_port, g.https_port
    if (http == 80 and kind != "tls-alpn-01") or (https == 443 and kind == "tls-alpn-01"):
        return []
    sites = [site for site in config.sites if wants_acme(site)]
    if not sites:
        return []
    named = ", ".join(f"{site.key_path} ({', '.join(acme_names(site)[:2])})" for site in sites[:3])
    named += f" and {len(sites) - 3} more" if len(sites) > 3 else ""
    if kind == "tls-alpn-01":
        return [f"porch.https_port: {https} is not 443, and {named} get certificates from ACME over"
                " TLS-ALPN-01 (acme_challenge_type), which the CA sends to port 443 of each name:"
                f" validation fails unless something forwards port 443 to {https} (a NAT or"
                " firewall rule); set https_port = 443 or acme_challenge_type = \"http-01\""]
    text = (f"porch.http_port: {http} is not 80, and {named} get certificates from ACME over"
            " HTTP-01, which the CA sends to port 80 of each name: validation fails unless"
            f" something forwards port 80 to {http} (a NAT or firewall rule, another proxy)")
    if kind == "auto" and https == 443:
        return [text + "; Porch then validates over TLS-ALPN-01 on https_port 443, after a failed"
                " HTTP-01 attempt each time (the CA counts failures): set http_port = 80, or"
                ' acme_challenge_type = "tls-alpn-01"']
    return [text + "; set http_port = 80, or give these sites tls = { cert, key } files or"
            ' tls = "internal"']


# nginx location modifiers ("~", "~*", "=", "^~") and regex metacharacters that
# never appear in a plain path prefix.
_REGEX_HINTS = re.compile(r"^\s*(?:~\*?|\^~|=)\s|[$^|()\[\]]|\\[.dwsb]|\.\*|\.\+")


def regex_path_problem(value: str) -> str | None:
    """For a route `path` refused as a prefix (no leading "/", or a "*") that reads
    like a regular expression (nginx's `location ~* \\.(jpg|png)$`): say that, not
    "write /~* ..."."""
    if not _REGEX_HINTS.search(value):
        return None
    return (f"{_quote(value)} looks like a regular expression; route paths are prefixes:"
            ' write regex = "\\\\.(jpg|png)$" (nginx ~; add regex_case = false for ~*),'
            ' match = "*.{jpg,png}" (a glob), or a prefix such as "/images/"')


def _quote(value: str) -> str:
    import json

    text = value if len(value) <= 60 else value[:57] + "..."
    return json.dumps(text, ensure_ascii=False)
