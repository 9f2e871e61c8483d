"""Parsers of the TLS keys: a site's `tls` and `hsts`, [porch]'s TLS protocols and
ciphers, and `upstream_tls` (with the PEM checks of its files)."""

from __future__ import annotations

import difflib
import json
import re
import ssl
from typing import Any

from porch.config.hosts import dns_name, ip_literal
from porch.config.model import Hsts, TlsFiles, TlsMode
from porch.config.units import parse_duration
from porch.config.values import Parser, Values, boolean, expect, is_int, nonempty, show, strings, unique

_TLS = '"auto", "internal", "off", or { cert = "/path/fullchain.pem", key = "/path/privkey.pem" }'
_TLS_FILE_KEYS = ("cert", "key", "chain")  # chain: optional


def tls(value: Any) -> TlsMode | TlsFiles:
    if isinstance(value, dict):
        return _tls_files(value)
    expect(isinstance(value, str), value, _TLS)
    if value not in ("auto", "internal", "off"):
        raise ValueError(f"{show(value)} is not supported; expected {_TLS}")
    return value


def _tls_files(table: Values) -> TlsFiles:
    for key in table:
        if key not in _TLS_FILE_KEYS:
            close = difflib.get_close_matches(key, _TLS_FILE_KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else "expected cert, key and chain"
            raise ValueError(f"{{...}} has unknown key {key} ({hint})")
    paths = []
    for key in ("cert", "key"):
        if key not in table:
            raise ValueError(f'{{...}} has no {key}; write {{ cert = "fullchain.pem", key = "privkey.pem" }}')
        paths.append(nonempty("a file path")(table[key]))
    chain = nonempty("a file path")(table["chain"]) if "chain" in table else None
    return TlsFiles(*paths, chain)  # made absolute and checked by _Reader.site_tls_files


def tls_default(value: Any) -> TlsMode:
    expected = '"auto", "internal" or "off" (the default for sites without tls)'
    expect(isinstance(value, str), value, expected)
    if value not in ("auto", "internal", "off"):
        raise ValueError(f"{show(value)} is not supported; expected {expected}")
    return value


_PROTOCOLS = ("1.2", "1.3")


def tls_protocols(value: Any) -> tuple[str, ...]:
    versions = unique(strings(value, '"1.2" or "1.3"'))
    for v in versions:
        if v in ("1.0", "1.1"):
            raise ValueError(f'{show(v)} is not allowed: TLS 1.0 and 1.1 are deprecated (RFC 8996);'
                             ' expected "1.2" and/or "1.3"')
        if v not in _PROTOCOLS:
            raise ValueError(f'{show(v)} is not a TLS version; expected "1.2" and/or "1.3"')
    return tuple(sorted(versions))


def tls_ciphers(value: Any) -> str:
    text = nonempty('an OpenSSL cipher list like "ECDHE+AESGCM"')(value)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(text)
    except ssl.SSLError:
        raise ValueError(f"{show(text)} selects no cipher OpenSSL knows;"
                         ' expected an OpenSSL cipher list like "ECDHE+AESGCM"') from None
    return text


# hstspreload.org: preload needs includeSubDomains and max-age of at least a year.
_PRELOAD_MIN_AGE = 365 * 86400
_HSTS_KEYS = ("max_age", "include_subdomains", "preload")


def hsts(value: Any) -> Hsts:
    if not isinstance(value, dict):
        value = {"max_age": value}
    for key in value:
        if key not in _HSTS_KEYS:
            close = difflib.get_close_matches(key, _HSTS_KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"expected {', '.join(_HSTS_KEYS)}"
            raise ValueError(f"{{...}} has unknown key {key} ({hint})")
    if "max_age" not in value:
        raise ValueError('{...} has no max_age; write { max_age = "1y" }')
    raw = value["max_age"]
    expect(is_int(raw) or isinstance(raw, str), raw, 'a duration like "1y" or "180d"')
    age = int(parse_duration(raw))
    sub = boolean(value.get("include_subdomains", False))
    preload = boolean(value.get("preload", False))
    if preload and (not sub or age < _PRELOAD_MIN_AGE):
        raise ValueError("preload needs include_subdomains = true and a max_age of at least"
                         ' "1y" (hstspreload.org)')
    return Hsts(age, sub, preload)


# --- upstream_tls ----------------------------------------------------------------


class SubProblems(ValueError):
    """Problems inside a table value, each at its own key: `site[0].upstream_tls.ca`."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def _server_name(value: Any) -> str:
    text = nonempty('a host name like "dav.internal"')(value)
    return ip_literal(text) or dns_name(text)


_FILE = "a file path"
_UPSTREAM_TLS_KEYS: dict[str, Parser] = {
    "verify": boolean,
    "ca": nonempty(f"{_FILE}: the CA certificate (or the upstream's own certificate) to trust"),
    "cert": nonempty(f"{_FILE}: the client certificate (PEM)"),
    "key": nonempty(f"{_FILE}: the client certificate's private key (PEM)"),
    "server_name": _server_name,
}
_UPSTREAM_TLS = 'a table like { verify = false } or { ca = "server_cert.pem" }'


def upstream_tls(value: Any) -> Values:
    """The `upstream_tls` table: each key parsed; file paths are read later (`_Reader.tls_files`)."""
    expect(isinstance(value, dict), value, _UPSTREAM_TLS)
    found: Values = {}
    problems: list[tuple[str, str]] = []
    for key, item in value.items():
        if key not in _UPSTREAM_TLS_KEYS:
            close = difflib.get_close_matches(key, list(_UPSTREAM_TLS_KEYS), n=1)
            known = ", ".join(_UPSTREAM_TLS_KEYS)
            hint = f"did you mean {close[0]}?" if close else f"expected one of: {known}"
            problems.append((key, f"unknown key ({hint})"))
            continue
        try:
            found[key] = _UPSTREAM_TLS_KEYS[key](item)
        except ValueError as e:
            problems.append((key, str(e)))
    if found.get("verify") is False and "ca" in found:
        problems.append(("ca", "is not used with verify = false; keep one of them"))
    if problems:
        raise SubProblems(problems)
    return found


RELATIVE = "relative paths start at the config file's directory"


def quoted_path(text: str) -> str:
    """A file path quoted whole (`show` shortens long values; a path needs every part)."""
    return json.dumps(text, ensure_ascii=False)


_CERT_PEM = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")
KEY_PEM = re.compile(rb"-----BEGIN ((?:[A-Z]+ )*)PRIVATE KEY-----")


def pem_problem(data: bytes, kind: str, text: str) -> str | None:
    """What is wrong with a PEM file's content for `kind` (ca, cert, key), or None."""
    if kind == "key":
        match = KEY_PEM.search(data)
        if match is None:
            return f"{quoted_path(text)} holds no private key; expected a PEM file with -----BEGIN PRIVATE KEY-----"
        if b"ENCRYPTED" in match.group(1) or b"Proc-Type: 4,ENCRYPTED" in data:
            return (f"{quoted_path(text)} is an encrypted key; Porch reads keys without a passphrase"
                    " (decrypt it once: openssl pkey -in KEY -out KEY.plain)")
        return None
    if _CERT_PEM.search(data) is None:
        what = "the CA's or the upstream's certificate" if kind == "ca" else "the client certificate"
        return f"{quoted_path(text)} holds no certificate; expected {what} as PEM (-----BEGIN CERTIFICATE-----)"
    return None


