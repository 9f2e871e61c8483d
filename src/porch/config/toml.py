"""porch.toml -> the typed model in `config/model.py`.

A file is read in three steps so that one run reports every problem it can:

1. each table is read against its key table (key -> parser).  A bad value becomes a
   problem naming its key path (`site[2].route[0].proxy`) and is kept as `_BAD`,
   so later steps neither use it nor complain about it a second time;
2. checks across tables: a host in two sites, two catch-all sites, a path twice in
   one site, a route that ends up with no upstream;
3. the model is built, most specific value first: route over site over the `[porch]`
   defaults over the model's defaults.

Nothing is returned if any problem was found: `ConfigError` carries them all.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from porch._compiled import HTTP2_ENGINES, http2_engine
from porch.config import checks, upstreams
from porch.config.errors import ConfigError
from porch.config.model import (LETSENCRYPT, LETSENCRYPT_STAGING, Bundle, Config, Global, Hsts, Limits,
                                Route, Site, TlsFiles, TlsMode, UpstreamTarget, UpstreamTLS, Webroot)
from porch.config.streams import check_listener, read_streams
from porch.config.units import parse_duration, parse_size
from porch.policies import registry
from porch.tls.names import is_ip, is_local
from porch.upstream import tls as tls_setup

Parser = Callable[[Any], Any]
Values = dict[str, Any]

_BAD: Any = object()  # present but invalid, and already reported


def load(path: str | os.PathLike[str]) -> Config:
    """Read and check a porch.toml file; raise ConfigError listing every problem.

    Relative file paths in it (upstream_tls files) start at the file's directory."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{source}: cannot read the file: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{source}: byte {e.start} is not UTF-8; TOML files are UTF-8"]) from None
    return loads(text, source, base=os.path.dirname(os.path.abspath(path)))


def loads(text: str, source: str = "<string>", base: str | None = None) -> Config:
    """Check porch.toml text; `source` names it in messages and in `Config.source`;
    relative file paths start at `base` (default: the current directory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: {e}"]) from None
    return load_data(data, source, base)


def load_data(data: Values, source: str, base: str | None = None) -> Config:
    """Check a config given as the values porch.toml would hold (what every front-end,
    nginx and Apache files included, produces); the same checks and messages as a
    porch.toml file."""
    return checks.checked(_Reader(source, base or os.getcwd()).config(data))


# --- reading one value ---------------------------------------------------------
# A parser takes the TOML value and returns the model value, or raises ValueError
# whose message quotes the value and says what to write instead.


def _show(value: Any) -> str:
    """A value spelled as in TOML, shortened: messages quote what the user wrote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(text, ensure_ascii=False)  # JSON escapes are TOML's: one line
    if isinstance(value, list):
        inner = ", ".join(_show(item) for item in value[:3])
        return f"[{inner}{', ...' if len(value) > 3 else ''}]"
    if isinstance(value, dict):
        return "{...}"
    return str(value)


_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
          (list, "an array"), (dict, "a table"))  # fmt: skip


def _expect(ok: bool, value: Any, expected: str) -> None:
    """Raise the standard wrong-type message: `"80" is a string; expected ...`."""
    if not ok:
        kind = next((name for t, name in _KINDS if isinstance(value, t)), "a date/time")
        raise ValueError(f"{_show(value)} is {kind}; expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(value: Any, expected: str) -> list[str]:
    """A string or a non-empty array of strings, as a list."""
    if isinstance(value, str):
        return [value]
    _expect(isinstance(value, list), value, f"{expected}, or an array of them")
    if not value:
        raise ValueError(f"[] is empty; expected at least one: {expected}")
    for item in value:
        _expect(isinstance(item, str), item, expected)
    return value


def _unique(items: Iterable[Any], show: Callable[[Any], str] = _show) -> tuple[Any, ...]:
    seen: list[Any] = []
    for item in items:
        if item in seen:
            raise ValueError(f"{show(item)} is listed twice")
        seen.append(item)
    return tuple(seen)


_PORT = "an integer port 1-65535"


def _port(value: Any) -> int:
    _expect(_is_int(value), value, _PORT)
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is out of range; expected {_PORT}")
    return value


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host, _, port = text.rpartition(":")
    if port.isdigit() and host:
        raise ValueError(f"{_show(text)} has a port; write the address alone and the port as http_port")
    raise ValueError(f'{_show(text)} is not an IP address; expected one like "127.0.0.1" or "::1"')


def _bind(value: Any) -> tuple[str, ...]:
    return _unique(_address(text) for text in _strings(value, 'an IP address like "127.0.0.1"'))


def _networks(value: Any) -> tuple[str, ...]:
    _expect(isinstance(value, list), value, 'an array of CIDRs or IPs like ["10.0.0.0/8"]')
    found = []
    for item in value:
        _expect(isinstance(item, str), item, 'a CIDR or IP like "10.0.0.0/8"')
        try:
            # strict=False: "10.1.2.3/8" means the network it is in, as in nginx set_real_ip_from
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f'{_show(item)} is not a CIDR or IP; expected one like "10.0.0.0/8"') from None
    return _unique(found)


_WORKERS = '"auto" or a number of worker processes, 1 or more'


def _workers(value: Any) -> int | str:
    _expect(value == "auto" or _is_int(value), value, _WORKERS)
    if value != "auto" and value < 1:
        raise ValueError(f"{value} is below 1; expected {_WORKERS}")
    return value


def _text(expected: str) -> Parser:
    """A non-empty string, otherwise as given."""

    def parse(value: Any) -> str:
        _expect(isinstance(value, str), value, expected)
        if not value.strip():
            raise ValueError(f"{_show(value)} is empty; expected {expected}")
        return value

    return parse


def _error_log(value: Any) -> str:
    path = _text('a file path, or "-" for stderr')(value)
    if path == "off":  # it would quietly become a file named "off"
        raise ValueError('"off" is not allowed: errors must go somewhere (write a path, or "-" for stderr)')
    return path


def _choice(*options: str) -> Parser:
    spelled = " or ".join(_show(option) for option in options)

    def parse(value: Any) -> str:
        _expect(isinstance(value, str), value, spelled)
        if value not in options:
            raise ValueError(f"{_show(value)} is not supported; expected {spelled}")
        return value

    return parse


def _email(value: Any) -> str:
    text = _text('an email address like "admin@example.org"')(value)
    local, at, domain = text.partition("@")
    if not (local and at and domain) or "@" in domain or any(c.isspace() for c in text):
        raise ValueError(f'{_show(text)} is not an email address; expected one like "admin@example.org"')
    return text


_SIZE = 'a size like "64k", "20M" or "1G", or a number of bytes'


def _bytes(value: Any) -> int:
    _expect(_is_int(value) or isinstance(value, str), value, _SIZE)
    return parse_size(value)


def _size(value: Any) -> int:
    if _bytes(value) == 0:
        raise ValueError(f"{_show(value)} is too small; expected {_SIZE}")
    return parse_size(value)


def _max_body(value: Any) -> int | None:
    if value == "off":
        return None
    if _bytes(value) == 0:  # nginx reads 0 as "no limit": make the writer say which
        raise ValueError(
            f"{_show(value)} is ambiguous;"
            ' write max_body = "off" for no limit, or a size like "20M"'
        )
    return parse_size(value)


_DURATION = 'a duration like "30s", "5m" or "250ms", or a number of seconds'


def _duration(*, zero_ok: bool) -> Parser:
    def parse(value: Any) -> float:
        _expect(_is_int(value) or isinstance(value, float | str), value, _DURATION)
        seconds = parse_duration(value)
        if seconds == 0 and not zero_ok:
            raise ValueError(f"{_show(value)} would fail every request; expected a duration above 0")
        return seconds

    return parse


_STREAMS = "a whole number from 1 to 10000, such as 100"


def _streams(value: Any) -> int:
    _expect(_is_int(value), value, _STREAMS)
    if not 1 <= value <= 10_000:
        raise ValueError(f"{value} is out of range; expected {_STREAMS}")
    return value


def _http2_engine(value: Any) -> str:
    choice = _choice(*HTTP2_ENGINES)(value)
    http2_engine(choice)  # "nghttp2" where it is not built: the error says how to build it
    return choice


def _bool(value: Any) -> bool:
    _expect(isinstance(value, bool), value, "true or false")
    return value


_TLS = '"auto", "internal", "off", or { cert = "/path/fullchain.pem", key = "/path/privkey.pem" }'
_TLS_FILE_KEYS = ("cert", "key", "chain")  # chain: optional


def _tls(value: Any) -> TlsMode | TlsFiles:
    if isinstance(value, dict):
        return _tls_files(value)
    _expect(isinstance(value, str), value, _TLS)
    if value not in ("auto", "internal", "off"):
        raise ValueError(f"{_show(value)} is not supported; expected {_TLS}")
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
        paths.append(_text("a file path")(table[key]))
    chain = _text("a file path")(table["chain"]) if "chain" in table else None
    return TlsFiles(*paths, chain)  # made absolute and checked by _Reader.site_tls_files


def _tls_default(value: Any) -> TlsMode:
    expected = '"auto", "internal" or "off" (the default for sites without tls)'
    _expect(isinstance(value, str), value, expected)
    if value not in ("auto", "internal", "off"):
        raise ValueError(f"{_show(value)} is not supported; expected {expected}")
    return value


_PROTOCOLS = ("1.2", "1.3")


def _tls_protocols(value: Any) -> tuple[str, ...]:
    versions = _unique(_strings(value, '"1.2" or "1.3"'))
    for v in versions:
        if v in ("1.0", "1.1"):
            raise ValueError(f'{_show(v)} is not allowed: TLS 1.0 and 1.1 are deprecated (RFC 8996);'
                             ' expected "1.2" and/or "1.3"')
        if v not in _PROTOCOLS:
            raise ValueError(f'{_show(v)} is not a TLS version; expected "1.2" and/or "1.3"')
    return tuple(sorted(versions))


def _tls_ciphers(value: Any) -> str:
    text = _text('an OpenSSL cipher list like "ECDHE+AESGCM"')(value)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(text)
    except ssl.SSLError:
        raise ValueError(f"{_show(text)} selects no cipher OpenSSL knows;"
                         ' expected an OpenSSL cipher list like "ECDHE+AESGCM"') from None
    return text


# hstspreload.org: preload needs includeSubDomains and max-age of at least a year.
_PRELOAD_MIN_AGE = 365 * 86400
_HSTS_KEYS = ("max_age", "include_subdomains", "preload")


def _hsts(value: Any) -> Hsts:
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
    _expect(_is_int(raw) or isinstance(raw, str), raw, 'a duration like "1y" or "180d"')
    age = int(parse_duration(raw))
    sub = _bool(value.get("include_subdomains", False))
    preload = _bool(value.get("preload", False))
    if preload and (not sub or age < _PRELOAD_MIN_AGE):
        raise ValueError("preload needs include_subdomains = true and a max_age of at least"
                         ' "1y" (hstspreload.org)')
    return Hsts(age, sub, preload)


# --- host names ----------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # "_": docker service names


def _ip_literal(text: str) -> str | None:
    """Canonical text of an IP literal ("[::1]" and "::1" both give "::1"), else None."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def _dns_name(text: str) -> str:
    """Lowercase ASCII form of a DNS name; raises ValueError if it is not one."""
    name = text.lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")  # Host headers arrive in punycode
        except UnicodeError:
            raise ValueError(f"{_show(text)} is not a valid international domain name") from None
    if name.endswith("."):
        raise ValueError(f"{_show(text)} ends with a dot; write {_show(text.rstrip('.'))}")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{_show(text)} is not a valid host name (letters, digits, - and _ between dots)")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"{_show(text)} is not a valid IP address")
    return name


def _site_host(text: str) -> str:
    """One `hosts` entry: a name, an IP literal, or "*.name" matching one or more labels."""
    if not text:
        raise ValueError('"" is empty; expected a host name like "example.org"')
    if any(c.isspace() for c in text):
        raise ValueError(f"{_show(text)} contains whitespace; write one host name per string")
    if "/" in text:
        raise ValueError(f'{_show(text)} is not a host name; write only the name, like "example.org"')
    if (ip := _ip_literal(text)) is not None:
        return ip
    if ":" in text:
        raise ValueError(
            f"{_show(text)} has a port; write the name alone"
            " (ports are http_port and https_port in [porch])"
        )
    if text == "*":
        raise ValueError('"*" is not a host name; leave hosts out to make this the catch-all site')
    if text.startswith("*."):
        return "*." + _wildcard_free(text[2:], text)
    return _wildcard_free(text, text)


def _wildcard_free(name: str, text: str) -> str:
    if "*" in name:
        raise ValueError(f'{_show(text)}: * may only be the whole first label, as in "*.example.org"')
    return _dns_name(name)


def _hosts(value: Any) -> tuple[str, ...]:
    if value == []:
        raise ValueError("[] is empty; list at least one host name, or leave hosts out for the catch-all site")
    return _unique(_site_host(text) for text in _strings(value, 'a host name like "example.org"'))


def _upstream_host(value: Any) -> str:
    text = _text('a host name (and port) to send as Host, like "app.internal"')(value)
    if "/" in text or "@" in text or any(c.isspace() for c in text):
        raise ValueError(
            f"{_show(text)} is not a Host header value;"
            ' write a name (and port), like "app.internal:8080"'
        )
    return text


# --- upstream URLs -------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NOT_HTTP = "is not an http:// or https:// URL"


def _upstream(url: str) -> UpstreamTarget:
    """One `proxy` URL: scheme and host required, port defaulted, path kept."""
    if "://" not in url:  # "localhost:8080" parses as scheme "localhost": say what was meant
        raise ValueError(f"{_show(url)} {_NOT_HTTP} (write it as http://{url or 'host:port'})")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:  # a bad port or a broken [IPv6] literal
        raise ValueError(f"{_show(url)} is not a valid URL ({e}); write it as http://host:port") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{_show(url)} {_NOT_HTTP} (write it as http://host:port)")
    if "@" in parts.netloc:  # quote the URL without the credentials: output gets pasted in issues
        shown = f"{parts.scheme}://...@{parts.netloc.rpartition('@')[2]}"
        raise ValueError(f"{_show(shown)} has user info; proxy URLs take no user or password")
    if "?" in url or "#" in url:
        raise ValueError(
            f"{_show(url)} has a query or fragment;"
            " proxy URLs take a scheme, host, port and path only"
        )
    if not parts.hostname:
        raise ValueError(f"{_show(url)} has no host (write it as http://host:port)")
    if port == 0:
        raise ValueError(f"{_show(url)} has port 0; expected a port 1-65535")
    host = _ip_literal(parts.hostname) or _dns_name(parts.hostname)
    port = port or _DEFAULT_PORTS[parts.scheme]
    return UpstreamTarget(parts.scheme, host, port, parts.path.rstrip("/"))


def _proxy(value: Any) -> tuple[UpstreamTarget, ...]:
    return upstreams.targets(value, _upstream)  # URLs or { url, weight } tables


def _route_path(value: Any) -> str:
    _expect(isinstance(value, str), value, 'a path prefix like "/api/"')
    if not value.startswith("/") or "*" in value:  # what would be refused: a regex, maybe
        regex = checks.regex_path_problem(value)
        if regex:
            raise ValueError(regex)
    if not value.startswith("/"):
        raise ValueError(f"{_show(value)} does not start with /; write {_show('/' + value)}")
    if "*" in value:
        prefix = _show(value.split("*")[0])
        raise ValueError(f"{_show(value)} has a *; paths are prefixes already, write {prefix}")
    if "?" in value or "#" in value or any(c.isspace() for c in value):
        raise ValueError(f"{_show(value)} is not a plain path; write only the path, like \"/api/\"")
    return value


# --- ACME keys (porch.tls) -------------------------------------------------------

_CA_NAMES = {"letsencrypt": LETSENCRYPT, "letsencrypt-staging": LETSENCRYPT_STAGING}
_CA = 'an ACME directory URL like "https://acme.example/directory", "letsencrypt" or "letsencrypt-staging"'


def _acme_ca(value: Any) -> str:
    text = _text(_CA)(value)
    if text in _CA_NAMES:
        return _CA_NAMES[text]
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.netloc:  # RFC 8555 6.1: ACME is HTTPS only
        raise ValueError(f"{_show(text)} is not an https:// URL; expected {_CA}")
    return text


def _pem_file(value: Any) -> str:
    path = _text("a path to a PEM file")(value)
    if not os.path.isfile(path):
        raise ValueError(f"{_show(path)} is not a file; expected the CA's root certificate (PEM)")
    return path


def _command(value: Any) -> str:
    return _text('a shell command like "systemctl reload icecast2"')(value)


_CHALLENGE = '"porch", "upstream", or { webroot = "/var/www/letsencrypt" }'


def _acme_challenge(value: Any) -> str | Webroot:
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"webroot"})
        if unknown:
            raise ValueError(f"{_show(unknown[0])} is not an acme_challenge key; expected {_CHALLENGE}")
        if "webroot" not in value:
            raise ValueError(f"{{}} has no webroot; expected {_CHALLENGE}")
        root = _text("a directory path")(value["webroot"])
        if not os.path.isabs(root):
            raise ValueError(f"webroot {_show(root)} is relative; write an absolute path")
        return Webroot(root)
    return _choice("porch", "upstream")(value)


_PARTS = ("fullchain", "cert", "chain", "key")
_BUNDLE = 'a table like { path = "/etc/icecast2/bundle.pem", contents = ["fullchain", "key"] }'


def _bundle(value: Any) -> Bundle:
    _expect(isinstance(value, dict), value, _BUNDLE)
    for key in value:
        if key not in ("path", "contents", "mode", "group"):
            raise ValueError(f"{_show(key)} is not a bundle key; expected path, contents, mode or group")
    if "path" not in value:
        raise ValueError(f"a bundle without path; expected {_BUNDLE}")
    path = _text("a file path")(value["path"])
    if not os.path.isabs(path):
        raise ValueError(f"bundle path {_show(path)} is relative; write an absolute path")
    contents = tuple(_strings(value.get("contents", ["fullchain", "key"]), " or ".join(_PARTS)))
    for part in contents:
        if part not in _PARTS:
            raise ValueError(f"bundle contents {_show(part)} is not one of {', '.join(_PARTS)}")
    mode = value.get("mode", "0600")
    _expect(isinstance(mode, str), mode, 'an octal mode in quotes like "0640"')
    if not re.fullmatch(r"0?[0-7]{3}", mode):
        raise ValueError(f'bundle mode {_show(mode)} is not an octal mode; write one like "0640"')
    group = value.get("group")
    if group is not None:
        group = _group(group)
    return Bundle(path=path, contents=contents, mode=int(mode, 8), group=group)


def _group(value: Any) -> str:
    import grp

    name = _text("a group name")(value)
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ValueError(f"bundle group {_show(name)} does not exist on this machine") from None
    return name


def _bundles(value: Any) -> tuple[Bundle, ...]:
    _expect(isinstance(value, list), value, f"an array of bundles, each {_BUNDLE}")
    return _unique((_bundle(item) for item in value), show=lambda b: _show(b.path))


# --- upstream_tls ----------------------------------------------------------------


class _SubProblems(ValueError):
    """Problems inside a table value, each at its own key: `site[0].upstream_tls.ca`."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def _server_name(value: Any) -> str:
    text = _text('a host name like "dav.internal"')(value)
    return _ip_literal(text) or _dns_name(text)


_FILE = "a file path"
_UPSTREAM_TLS_KEYS: dict[str, Parser] = {
    "verify": _bool,
    "ca": _text(f"{_FILE}: the CA certificate (or the upstream's own certificate) to trust"),
    "cert": _text(f"{_FILE}: the client certificate (PEM)"),
    "key": _text(f"{_FILE}: the client certificate's private key (PEM)"),
    "server_name": _server_name,
}
_UPSTREAM_TLS = 'a table like { verify = false } or { ca = "server_cert.pem" }'


def _upstream_tls(value: Any) -> Values:
    """The `upstream_tls` table: each key parsed; file paths are read later (`_Reader.tls_files`)."""
    _expect(isinstance(value, dict), value, _UPSTREAM_TLS)
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
        raise _SubProblems(problems)
    return found


_RELATIVE = "relative paths start at the config file's directory"


def _path(text: str) -> str:
    """A file path quoted whole (`_show` shortens long values; a path needs every part)."""
    return json.dumps(text, ensure_ascii=False)


_CERT_PEM = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")
_KEY_PEM = re.compile(rb"-----BEGIN ((?:[A-Z]+ )*)PRIVATE KEY-----")


def _pem_problem(data: bytes, kind: str, text: str) -> str | None:
    """What is wrong with a PEM file's content for `kind` (ca, cert, key), or None."""
    if kind == "key":
        match = _KEY_PEM.search(data)
        if match is None:
            return f"{_path(text)} holds no private key; expected a PEM file with -----BEGIN PRIVATE KEY-----"
        if b"ENCRYPTED" in match.group(1) or b"Proc-Type: 4,ENCRYPTED" in data:
            return (f"{_path(text)} is an encrypted key; Porch reads keys without a passphrase"
                    " (decrypt it once: openssl pkey -in KEY -out KEY.plain)")
        return None
    if _CERT_PEM.search(data) is None:
        what = "the CA's or the upstream's certificate" if kind == "ca" else "the client certificate"
        return f"{_path(text)} holds no certificate; expected {what} as PEM (-----BEGIN CERTIFICATE-----)"
    return None


# --- the key tables ------------------------------------------------------------

_LIMIT_KEYS: dict[str, Parser] = {
    "max_body": _max_body,
    "header_timeout": _duration(zero_ok=False),
    "body_timeout": _duration(zero_ok=False),
    "upstream_connect_timeout": _duration(zero_ok=False),
    "upstream_timeout": _duration(zero_ok=False),
    "tunnel_idle_timeout": _duration(zero_ok=False),
}
_GLOBAL_ONLY_KEYS: dict[str, Parser] = {
    "http_port": _port,
    "https_port": _port,
    "bind": _bind,
    "trusted_proxies": _networks,
    "accept_proxy_protocol": _networks,
    "workers": _workers,
    "access_log": _text('a file path, "-" for stdout, or "off"'),
    "access_log_format": _choice("combined", "json"),
    "error_log": _error_log,
    "state_dir": _text("a directory path"),
    "max_header_size": _size,
    # 0 is meaningful for these: no keep-alive (as in nginx), stop (or replace
    # workers on reload) without draining
    "keepalive_timeout": _duration(zero_ok=True),
    "shutdown_timeout": _duration(zero_ok=True),
    "drain_timeout": _duration(zero_ok=True),
    "email": _email,
    "acme_ca": _acme_ca,
    "acme_ca_root": _pem_file,
    "acme_challenge_type": _choice("auto", "http-01", "tls-alpn-01"),
    "on_certificate": _command,
    "tls_protocols": _tls_protocols,
    "tls_ciphers": _tls_ciphers,
    "http2": _bool,
    "max_concurrent_streams": _streams,
    "http2_engine": _http2_engine,
    "send_timeout": _duration(zero_ok=False),
    "underscores_in_headers": _bool,
    "error_log_level": _choice("debug", "info", "warn", "error"),
}
def _proxy_protocol_version(value: Any) -> int:
    if value in ("v1", "v2", "off"):
        return {"v1": 1, "v2": 2, "off": 0}[value]
    raise ValueError(f'{_show(value)} is not "v1", "v2" or "off" (the PROXY protocol version'
                     " the upstream reads: HAProxy's send-proxy is v1, send-proxy-v2 is v2)")


# Keys a route takes, each (but path) also a site key whose value routes inherit.
_ROUTE_KEYS: dict[str, Parser] = {
    "path": _route_path,
    "proxy": _proxy,
    "strip_prefix": _bool,
    "upstream_host": _upstream_host,
    "allow_trace": _bool,
    "upstream_proxy_protocol": _proxy_protocol_version,
    # merged key by key: route over site over [porch]
    "upstream_tls": _upstream_tls,
    **_LIMIT_KEYS,
    **upstreams.POOL_KEYS,  # balance, max_fails, fail_timeout, retries, health
}
# Policy keys (policies/registry.py): in [porch], a site or a route, merged in that order.
_POLICY_KEYS: dict[str, Parser] = {spec.key: spec.parse for spec in registry.SPECS}
_ROUTE_KEYS.update(_POLICY_KEYS)
_INHERITED = ("proxy", "strip_prefix", "upstream_host", "allow_trace", "upstream_proxy_protocol",
              *upstreams.POOL_KEYS)


def _nested(value: Any) -> Any:
    return value  # a table read by its own step (`_Reader.tables`), not here


_SITE_KEYS: dict[str, Parser] = {
    "hosts": _hosts,
    "tls": _tls,
    "redirect_http": _bool,
    "hsts": _hsts,
    **{key: _ROUTE_KEYS[key] for key in _INHERITED},
    "upstream_tls": _upstream_tls,
    **_LIMIT_KEYS,
    **_POLICY_KEYS,
    "acme_challenge": _acme_challenge,
    "on_certificate": _command,
    "bundles": _bundles,
    "route": _nested,
}
_SITE_ACME_KEYS = ("acme_challenge", "on_certificate", "bundles")
# [porch] keys that are defaults for every site, and their parser there.
_SITE_DEFAULT_KEYS: dict[str, Parser] = {"tls": _tls_default}
_GLOBAL_KEYS: dict[str, Parser] = {**_GLOBAL_ONLY_KEYS, "upstream_tls": _upstream_tls, **_LIMIT_KEYS,
                                   **_SITE_DEFAULT_KEYS, **_POLICY_KEYS}
_TOP_KEYS: dict[str, Parser] = {"porch": _nested, "site": _nested, "stream": _nested}

# Where each key belongs, for a key written in the wrong table.
_HOME = {
    **dict.fromkeys(_GLOBAL_ONLY_KEYS, "[porch]"),
    **dict.fromkeys(_SITE_KEYS, "[[site]]"),
    "on_certificate": "[porch] or [[site]]",
    "path": "[[site.route]]",
    "route": "[[site.route]] tables, after their [[site]]",
}


# --- reading the file ----------------------------------------------------------


class _Reader:
    """Collects problems while reading one file; see the module docstring for the steps."""

    def __init__(self, source: str, base: str) -> None:
        self.source = source
        self.base = base  # where relative file paths start
        self.problems: list[str] = []
        self.pem_with_key: set[str] = set()  # cert files that hold their key too
        self.contexts_tried: dict[UpstreamTLS, str | None] = {}  # setting -> problem
        self.default_tls: TlsMode | None = None  # [porch] tls

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def config(self, data: Values) -> Config:
        self.read(data, _TOP_KEYS, "", "a top-level key")
        porch, defaults = self.porch(data.get("porch", {}))
        drafts = [self.site_draft(i, table) for i, table in enumerate(self.tables(data, "site"))]
        if not drafts and not self.problems:
            self.problem(self.source, 'no sites (add a [[site]] with hosts = ["example.org"]'
                         ' and proxy = "http://127.0.0.1:8080")')
        self.check_hosts([site for site, _ in drafts])
        sites = tuple(self.site(i, *draft, defaults) for i, draft in enumerate(drafts))
        streams = read_streams(self.tables(data, "stream"), self.problem)  # config/streams.py
        check_listener(streams, sites, self.problem)
        if self.problems:
            raise ConfigError(sorted(self.problems, key=_site_index))
        return Config(porch=porch, sites=sites, source=self.source, streams=streams)

    def read(self, table: Values, keys: Mapping[str, Parser], where: str, scope: str) -> Values:
        """Parse each key of `table` with its parser; record unknown and bad keys."""
        values: Values = {}
        for key, value in table.items():
            path = f"{where}.{key}" if where else key
            if key not in keys:
                self.problem(path, _unknown(key, keys, scope))
                continue
            try:
                values[key] = keys[key](value)
            except (_SubProblems, upstreams.SubProblems) as e:
                for sub, message in e.problems:
                    self.problem(f"{path}.{sub}", message)
                values[key] = _BAD
            except ValueError as e:
                self.problem(path, str(e))
                values[key] = _BAD
        if isinstance(values.get("tls"), TlsFiles):
            values["tls"] = self.site_tls_files(f"{where}.tls", values["tls"])
        if isinstance(values.get("upstream_tls"), dict):
            values["upstream_tls"] = self.tls_files(f"{where}.upstream_tls", values["upstream_tls"])
        return values

    def site_tls_files(self, where: str, files: TlsFiles) -> TlsFiles | Any:
        """`tls = { cert, key }` with absolute paths (relative ones start at the config
        file's directory, as for upstream_tls); _BAD (reported) when one is missing.
        Whether they load together is checked once the model is built (config/checks.py)."""
        out = []
        for kind, text in (("cert", files.cert), ("key", files.key), ("chain", files.chain)):
            if text is None:
                out.append(None)
                continue
            path = os.path.normpath(os.path.join(self.base, os.path.expanduser(text)))
            if not os.path.exists(path):
                whence = "" if os.path.isabs(text) else f" (as {path}: {_RELATIVE})"
                self.problem(f"{where}.{kind}", f"{_path(text)} does not exist{whence};"
                             " give the path of a PEM file")
            out.append(path)
        return TlsFiles(*out) if all(p is None or os.path.exists(p) for p in out) else _BAD

    def tls_files(self, where: str, table: Values) -> Any:
        """`table` with its file paths made absolute, once each file is read and looks
        right; _BAD (reported) if one does not.  A wrong path is a `porch check` error."""
        out = dict(table)
        for kind in ("ca", "cert", "key"):
            if kind not in table:
                continue
            text = table[kind]
            path = os.path.normpath(os.path.join(self.base, os.path.expanduser(text)))
            try:
                with open(path, "rb") as f:
                    data = f.read(1024 * 1024)  # PEM bundles are kilobytes; a system bundle ~200k
            except OSError as e:
                whence = "" if os.path.isabs(text) else f" (as {path}: {_RELATIVE})"
                self.problem(f"{where}.{kind}", f"{_path(text)} cannot be read: {e.strerror}{whence}")
                out = _BAD
                continue
            problem = _pem_problem(data, kind, text)
            if problem:
                self.problem(f"{where}.{kind}", problem)
                out = _BAD
            elif out is not _BAD:
                out[kind] = path
                if kind == "cert" and _KEY_PEM.search(data):
                    self.pem_with_key.add(path)
        return out

    def tables(self, parent: Values, key: str, where: str = "") -> list[Values]:
        """An array of tables such as [[site]]; a lone [site] is read but reported."""
        path = f"{where}.{key}" if where else key
        header = f"{where.split('[')[0]}.{key}" if where else key
        value = parent.get(key, [])
        if isinstance(value, dict):
            self.problem(path, f"is a single table; write [[{header}]] (double brackets), once for each")
            return [value]
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.problem(path, f"{_show(value)} is not a list of tables; write [[{header}]] sections")
            return []
        return value

    def porch(self, table: Any) -> tuple[Global, Values]:
        """The [porch] table: the Global model, and the limit values sites inherit."""
        if not isinstance(table, dict):
            self.problem("porch", "is not a table; write a single [porch] section")
            table = {}
        values = self.read(table, _GLOBAL_KEYS, "porch", "a [porch] key")
        https = values.get("https_port")
        if https is not None and https == values.get("http_port", Global.http_port):
            self.problem("porch.https_port", f"{https} is also http_port; use two different ports")
        fields = _layered([values], _GLOBAL_ONLY_KEYS)
        self.default_tls = values.get("tls") if values.get("tls") is not _BAD else None
        return Global(**fields), _layered([values], {**_LIMIT_KEYS, "upstream_tls": None, **_POLICY_KEYS})

    def site_draft(self, i: int, table: Values) -> tuple[Values, list[Values]]:
        """A site's own values and its routes' values, read but not yet combined."""
        where = f"site[{i}]"
        site = self.read(table, _SITE_KEYS, where, "a site key")
        tables = self.tables(table, "route", where)
        routes = [self.route_draft(f"{where}.route[{j}]", t) for j, t in enumerate(tables)]
        return site, routes

    def route_draft(self, where: str, table: Values) -> Values:
        route = self.read(table, _ROUTE_KEYS, where, "a route key")
        if "path" not in route:
            self.problem(where, 'no path (add path = "/prefix/" to the route)')
        return route

    def check_hosts(self, sites: list[Values]) -> None:
        """Each host in one site only; at most one site without hosts (the catch-all)."""
        owners: dict[str, int] = {}
        catch_all: int | None = None
        for i, site in enumerate(sites):
            if "hosts" not in site and catch_all is not None:
                self.problem(f"site[{i}]", f"a second catch-all site (no hosts); site[{catch_all}]"
                             " is one already (add hosts = [...] to one of them)")
            elif "hosts" not in site:
                catch_all = i
            hosts = site.get("hosts", ())
            for host in () if hosts is _BAD else hosts:
                if host in owners:
                    self.problem(f"site[{i}].hosts", f"{_show(host)} is also in site[{owners[host]}];"
                                 " a host may belong to one site only")
                owners.setdefault(host, i)

    def site(self, i: int, site: Values, routes: list[Values], defaults: Values) -> Site:
        where = f"site[{i}]"
        self.check_paths(where, routes)
        built = [self.route(f"{where}.route[{j}]", site, r, defaults) for j, r in enumerate(routes)]
        if "proxy" in site and not any(route.get("path") == "/" for route in routes):
            built.append(self.route(where, site, {"path": "/"}, defaults))  # the site's own proxy
        elif not routes:
            self.problem(where, 'no proxy (add proxy = "http://host:port" to the site, or [[site.route]] tables)')
        if isinstance(site.get("upstream_tls"), dict) and not any(r and _has_https(r.upstreams) for r in built):
            self.problem(f"{where}.upstream_tls", _NO_HTTPS)
        values = _layered([site], _SITE_KEYS)
        hosts = values.get("hosts", ())
        tls = self.tls(where, hosts, values.get("tls"), site.get("tls") is _BAD)
        if "hsts" in values and tls == "off":
            self.problem(f"{where}.hsts", 'needs HTTPS, and this site has tls = "off"'
                         " (remove hsts, or give the site a certificate)")
        return Site(
            hosts=hosts,
            routes=tuple(route for route in built if route is not None),
            tls=tls,
            redirect_http=values.get("redirect_http", True),
            hsts=values.get("hsts"),
            key_path=where,
            policies=registry.merged([_layered([layer], _POLICY_KEYS) for layer in (defaults, site)]),
            **_layered([site], _SITE_ACME_KEYS),
        )

    def tls(self, where: str, hosts: tuple[str, ...], tls: Any, bad: bool) -> TlsMode | TlsFiles:
        """The site's TLS mode: as written, else [porch] tls, else from its hosts
        (public names "auto", local ones "internal", the catch-all "off")."""
        if bad:
            return "off"
        explicit = tls is not None
        tls = tls or self.default_tls
        if not hosts:  # the catch-all: no name to get a certificate for
            if explicit and tls in ("auto", "internal"):
                self.problem(f"{where}.tls", f"{_show(tls)} needs host names, and this is the catch-all"
                             ' site; write tls = { cert = ..., key = ... } (served for unknown names)'
                             ' or "off", or add hosts = [...]')
            return tls if explicit else "off"
        # IP addresses and wildcards may sit in an "auto" site: its ACME certificate
        # covers the other names and the manager logs those it skips (tls/auto.py).
        # Local DNS names may not: the CA would refuse the whole order.
        local = [h for h in hosts if is_local(h) and not is_ip(h)]
        public = [h for h in hosts if not is_local(h)]
        if tls is None:
            if local and public:
                self.problem(f"{where}.hosts", f"mixes public names ({_show(public[0])}) and local ones"
                             f" ({_show(local[0])}), which no public CA certifies; split them into two"
                             ' sites, or set tls = "internal", { cert = ..., key = ... } or "off"')
                return "off"
            tls = "auto" if public else "internal"
        if tls == "auto" and local:
            key = f"{where}.tls" if explicit else f"{where}.hosts"
            self.problem(key, f'{_show(local[0])} cannot get an ACME certificate (tls = "auto"):'
                         ' public CAs only certify public DNS names; use tls = "internal"'
                         ' (Porch\'s local CA), { cert = ..., key = ... } or "off"')
        return tls

    def check_paths(self, where: str, routes: list[Values]) -> None:
        first: dict[str, int] = {}
        for j, route in enumerate(routes):
            path = route.get("path")
            if isinstance(path, str) and path in first:
                self.problem(f"{where}.route[{j}].path", f"{_show(path)} is also"
                             f" {where}.route[{first[path]}]; a path may appear once per site")
            elif isinstance(path, str):
                first[path] = j

    def route(self, where: str, site: Values, route: Values, defaults: Values) -> Route | None:
        """The route's values over the site's; None (reported or bad) if incomplete."""
        if "proxy" not in route and "proxy" not in site:
            self.problem(where, 'no proxy (add proxy = "http://host:port" to the route or the site)')
            return None
        values = _layered([site, route], _ROUTE_KEYS)
        if "path" not in values or "proxy" not in values:  # bad values, already reported
            return None
        built = Route(
            path=values["path"],
            upstreams=values["proxy"],
            strip_prefix=values.get("strip_prefix", False),
            upstream_host=values.get("upstream_host"),
            allow_trace=values.get("allow_trace", False),
            upstream_proxy_protocol=values.get("upstream_proxy_protocol", 0),
            limits=Limits(**_layered([defaults, site, route], _LIMIT_KEYS)),
            upstream_tls=self.upstream_tls(where, [defaults, site, route], _has_https(values["proxy"])),
            pool=upstreams.pool(values),
            key_path=where,
            policies=registry.merged([_layered([layer], _POLICY_KEYS) for layer in (defaults, site, route)]),
        )
        if isinstance(route.get("upstream_tls"), dict) and not _has_https(built.upstreams):
            self.problem(f"{where}.upstream_tls", _NO_HTTPS)
        return built

    def upstream_tls(self, where: str, layers: list[Values], https: bool) -> UpstreamTLS:
        """The route's `upstream_tls`, key by key (route over site over [porch]).  For a
        route with https:// upstreams, its files are tried together as the connection
        will use them (once per distinct setting, so a problem is reported once)."""
        merged: Values = {}
        for layer in layers:
            table = layer.get("upstream_tls")
            if table is _BAD:
                https = False  # reported already; the rest may not add up without it
            elif isinstance(table, dict):
                merged.update(table)
        found = UpstreamTLS(**merged)
        if https and found not in self.contexts_tried:
            self.contexts_tried[found] = problem = self.tls_problem(found)
            if problem:
                self.problem(f"{where}.upstream_tls", problem)
        return found

    def tls_problem(self, tls: UpstreamTLS) -> str | None:
        if tls.key is not None and tls.cert is None:
            return 'key is set without cert; add cert = "client_cert.pem" (the client certificate)'
        if tls.cert is not None and tls.key is None and tls.cert not in self.pem_with_key:
            return 'cert is set without key; add key = "client_key.pem" (its private key)'
        if tls.ca or tls.cert:
            return _try_context(tls)
        return None


_NO_HTTPS = "is set but no upstream here is https://; write proxy = \"https://...\" (or remove upstream_tls)"


def _has_https(upstreams: tuple[UpstreamTarget, ...]) -> bool:
    return any(target.scheme == "https" for target in upstreams)


def _try_context(tls: UpstreamTLS) -> str | None:
    """Build the SSLContext the connection will use; why it cannot be, or None."""
    try:
        tls_setup.client_context(verify=tls.verify, ca=tls.ca, cert=tls.cert, key=tls.key)
    except (ssl.SSLError, OSError, ValueError) as e:
        return tls_setup.bad_files(e, ca=tls.ca, cert=tls.cert, key=tls.key)
    return None


def _layered(layers: list[Values], keys: Mapping[str, Any]) -> Values:
    """The `keys` values found in `layers`, later layers winning; bad values skipped."""
    merged: Values = {}
    for layer in layers:
        merged.update((k, v) for k, v in layer.items() if k in keys and v is not _BAD)
    return merged


def _site_index(problem: str) -> int:
    """Sort key putting problems in file order: top level and [porch], then by site."""
    match = re.match(r"site\[(\d+)\]", problem)
    return int(match.group(1)) if match else -1


def _unknown(key: str, keys: Mapping[str, Parser], scope: str) -> str:
    """Why `key` is not read here: it belongs elsewhere, a near miss, or the valid keys."""
    if key in _HOME:
        return f"not {scope} (write it in {_HOME[key]})"
    close = difflib.get_close_matches(key, list(keys), n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key (expected one of: {', '.join(keys)})"


__all__ = ["ConfigError", "load", "loads"]
