"""`[[stream]]` tables: connections on the HTTPS port passed through (sslh's job).

Read apart from config/validate.py, which calls `read_streams` with the tables and its
problem collector: any front-end that has streams can reuse it.  Every problem names
the key path (`stream[1].sni`), the value written and how to fix it.

    [[stream]]
    sni = ["chat.example.com", "*.chat.example.com"]
    alpn = ["xmpp-client"]
    passthrough = "127.0.0.1:5223"
    proxy_protocol = "v2"
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from porch.config.model import Site, Stream
from porch.config.units import parse_duration
from porch.mux.probes import PROTOCOLS

Problem = Callable[[str, str], None]  # (key path, message)

KEYS = ("sni", "alpn", "protocol", "passthrough", "proxy_protocol", "idle_timeout", "connect_timeout")
_PROTOCOLS = ("tls", *PROTOCOLS)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def read_streams(tables: list[dict[str, Any]], problem: Problem) -> tuple[Stream, ...]:
    """The streams, in file order; bad ones are reported and left out."""
    streams = []
    for i, table in enumerate(tables):
        stream = _stream(f"stream[{i}]", table, problem)
        if stream is not None:
            streams.append(stream)
    return tuple(streams)


def check_listener(streams: tuple[Stream, ...], sites: tuple[Site, ...], problem: Problem) -> None:
    """Streams share the HTTPS port, which listens only when a site serves HTTPS."""
    if streams and not any(site.tls != "off" for site in sites):
        problem(streams[0].key_path, "streams share the HTTPS port, and no site serves HTTPS;"
                " give a site a certificate (tls = \"auto\", \"internal\" or { cert, key })")


def _stream(where: str, table: dict[str, Any], problem: Problem) -> Stream | None:
    values: dict[str, Any] = {}
    ok = True
    for key, value in table.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"expected one of: {', '.join(KEYS)}"
            problem(f"{where}.{key}", f"unknown key ({hint})")
            ok = False
            continue
        try:
            values[key] = _PARSERS[key](value)
        except ValueError as e:
            problem(f"{where}.{key}", str(e))
            ok = False
    if "passthrough" not in table:
        problem(where, 'no passthrough (add passthrough = "127.0.0.1:5223", where these connections go)')
        return None
    protocol = values.get("protocol", "tls")
    if protocol != "tls" and ("sni" in table or "alpn" in table):
        problem(where, f"sni and alpn are read from a TLS ClientHello, and protocol = {_show(protocol)}"
                ' is not TLS; remove them, or write protocol = "tls"')
        ok = False
    elif "protocol" not in table and "sni" not in table and "alpn" not in table:
        problem(where, 'matches nothing: add sni = [...], alpn = [...], or protocol = "tls"'
                ' (every TLS connection) or a plain protocol ("xmpp", "ssh", "http", "openvpn", "any")')
        ok = False
    if not ok:
        return None
    return Stream(key_path=where, **values)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{_show(value)} is not {what}, or a non-empty array of them")
    if len(set(value)) != len(value):
        raise ValueError(f"{_show(value)} lists a value twice")
    return value


def _sni(value: Any) -> tuple[str, ...]:
    names = []
    for text in _strings(value, 'a server name like "chat.example.com" or "*.chat.example.com"'):
        name = text.lower().rstrip(".")
        bare = name[2:] if name.startswith("*.") else name
        labels = bare.split(".")
        if not bare or not all(_LABEL.fullmatch(label) for label in labels) or _is_ip(bare):
            raise ValueError(f'{_show(text)} is not a server name; write one like "chat.example.com",'
                             ' or "*.chat.example.com" for the names below it (clients send no SNI'
                             ' for IP addresses)')
        names.append(name)
    return tuple(names)


def _alpn(value: Any) -> tuple[str, ...]:
    protocols = _strings(value, 'an ALPN protocol id like "xmpp-client"')
    for text in protocols:
        if not 1 <= len(text.encode("utf-8")) <= 255:  # RFC 7301 3.1
            raise ValueError(f"{_show(text)} is not an ALPN protocol id (1 to 255 bytes)")
    return tuple(protocols)


def _protocol(value: Any) -> str:
    if value not in _PROTOCOLS:
        raise ValueError(f"{_show(value)} is not a protocol; expected one of: {', '.join(_PROTOCOLS)}")
    return value


def _proxy_protocol(value: Any) -> str | None:
    if value in (False, "off"):
        return None
    if value not in ("v1", "v2"):
        raise ValueError(f'{_show(value)} is not a PROXY protocol version; write "v1", "v2" or "off"')
    return value


def _passthrough(value: Any) -> tuple[str, int]:
    fix = 'write host:port, like "127.0.0.1:5223" or "[::1]:5223"'
    if not isinstance(value, str):
        raise ValueError(f"{_show(value)} is not a string; {fix}")
    if "://" in value:
        raise ValueError(f"{_show(value)} is a URL; a passthrough is raw TCP: {fix}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host):
            raise ValueError(f"{_show(value)}: {host} is not an IPv6 address; {fix}")
    elif ":" in host:
        raise ValueError(f"{_show(value)}: an IPv6 address goes in brackets; {fix}")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{_show(value)} has no host and port 1-65535; {fix}")
    return host.lower(), int(port)


def _duration(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except TypeError as e:
        raise ValueError(str(e)) from None
    if seconds <= 0:
        raise ValueError(f"{_show(value)} is zero; write a duration such as 10s or 1h")
    return seconds


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "sni": _sni,
    "alpn": _alpn,
    "protocol": _protocol,
    "passthrough": _passthrough,
    "proxy_protocol": _proxy_protocol,
    "idle_timeout": _duration,
    "connect_timeout": _duration,
}
