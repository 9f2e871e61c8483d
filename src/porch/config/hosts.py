"""Parsers of names and places: a site's host names, upstream URLs, route paths."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from porch.config import checks, upstreams
from porch.config.model import UpstreamTarget
from porch.config.values import expect, nonempty, show, strings, unique

# --- host names ----------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # "_": docker service names


def ip_literal(text: str) -> str | None:
    """Canonical text of an IP literal ("[::1]" and "::1" both give "::1"), else None."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def dns_name(text: str) -> str:
    """Lowercase ASCII form of a DNS name; raises ValueError if it is not one."""
    name = text.lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")  # Host headers arrive in punycode
        except UnicodeError:
            raise ValueError(f"{show(text)} is not a valid international domain name") from None
    if name.endswith("."):
        raise ValueError(f"{show(text)} ends with a dot; write {show(text.rstrip('.'))}")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{show(text)} is not a valid host name (letters, digits, - and _ between dots)")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"{show(text)} is not a valid IP address")
    return name


def _site_host(text: str) -> str:
    """One `hosts` entry: a name, an IP literal, or "*.name" matching one or more labels."""
    if not text:
        raise ValueError('"" is empty; expected a host name like "example.org"')
    if any(c.isspace() for c in text):
        raise ValueError(f"{show(text)} contains whitespace; write one host name per string")
    if "/" in text:
        raise ValueError(f'{show(text)} is not a host name; write only the name, like "example.org"')
    if (ip := ip_literal(text)) is not None:
        return ip
    if ":" in text:
        raise ValueError(
            f"{show(text)} has a port; write the name alone"
            " (ports are http_port and https_port in [porch])"
        )
    if text == "*":
        raise ValueError('"*" is not a host name; leave hosts out to make this the catch-all site')
    if text.startswith("*."):
        return "*." + _wildcard_free(text[2:], text)
    return _wildcard_free(text, text)


def _wildcard_free(name: str, text: str) -> str:
    if "*" in name:
        raise ValueError(f'{show(text)}: * may only be the whole first label, as in "*.example.org"')
    return dns_name(name)


def hosts(value: Any) -> tuple[str, ...]:
    if value == []:
        raise ValueError("[] is empty; list at least one host name, or leave hosts out for the catch-all site")
    return unique(_site_host(text) for text in strings(value, 'a host name like "example.org"'))


def upstream_host(value: Any) -> str:
    text = nonempty('a host name (and port) to send as Host, like "app.internal"')(value)
    if "/" in text or "@" in text or any(c.isspace() for c in text):
        raise ValueError(
            f"{show(text)} is not a Host header value;"
            ' write a name (and port), like "app.internal:8080"'
        )
    return text


# --- upstream URLs -------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NOT_HTTP = "is not an http:// or https:// URL"


def _upstream(url: str) -> UpstreamTarget:
    """One `proxy` URL: scheme and host required, port defaulted, path kept."""
    if "://" not in url:  # "localhost:8080" parses as scheme "localhost": say what was meant
        raise ValueError(f"{show(url)} {_NOT_HTTP} (write it as http://{url or 'host:port'})")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:  # a bad port or a broken [IPv6] literal
        raise ValueError(f"{show(url)} is not a valid URL ({e}); write it as http://host:port") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{show(url)} {_NOT_HTTP} (write it as http://host:port)")
    if "@" in parts.netloc:  # quote the URL without the credentials: output gets pasted in issues
        shown = f"{parts.scheme}://...@{parts.netloc.rpartition('@')[2]}"
        raise ValueError(f"{show(shown)} has user info; proxy URLs take no user or password")
    if "?" in url or "#" in url:
        raise ValueError(
            f"{show(url)} has a query or fragment;"
            " proxy URLs take a scheme, host, port and path only"
        )
    if not parts.hostname:
        raise ValueError(f"{show(url)} has no host (write it as http://host:port)")
    if port == 0:
        raise ValueError(f"{show(url)} has port 0; expected a port 1-65535")
    host = ip_literal(parts.hostname) or dns_name(parts.hostname)
    port = port or _DEFAULT_PORTS[parts.scheme]
    return UpstreamTarget(parts.scheme, host, port, parts.path.rstrip("/"))


def proxy(value: Any) -> tuple[UpstreamTarget, ...]:
    return upstreams.targets(value, _upstream)  # URLs or { url, weight } tables


def route_path(value: Any) -> str:
    expect(isinstance(value, str), value, 'a path prefix like "/api/"')
    if not value.startswith("/") or "*" in value:  # what would be refused: a regex, maybe
        regex = checks.regex_path_problem(value)
        if regex:
            raise ValueError(regex)
    if not value.startswith("/"):
        raise ValueError(f"{show(value)} does not start with /; write {show('/' + value)}")
    if "*" in value:
        prefix = show(value.split("*")[0])
        raise ValueError(f"{show(value)} has a *; paths are prefixes already, write {prefix}")
    if "?" in value or "#" in value or any(c.isspace() for c in value):
        raise ValueError(f"{show(value)} is not a plain path; write only the path, like \"/api/\"")
    return value


