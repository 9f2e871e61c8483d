"""Header rules: `request_headers` (what the upstream gets) and `response_headers`
(what the client gets), each a table of `set`, `add` and `remove`:

    request_headers = { set = { "X-Script-Name" = "/radicale" }, remove = ["X-Debug"] }
    response_headers = { set = { "X-Frame-Options" = "SAMEORIGIN" }, add = { "Cache-Control" = "public" }, remove = ["Server"] }

- `set` replaces every field of that name with one (nginx's proxy_set_header, Apache's
  `Header set`); `add` appends one, keeping others (`Header add`); `remove` drops them
  all (proxy_hide_header, `RequestHeader unset`).  Removal comes first, then set, then add.
- Response rules apply to every response, Porch's own errors and redirects included.
  nginx's add_header skips 4xx and 5xx unless `always` is written: a security header
  missing from an error page is the trap that keyword exists for, so Porch has no such
  gap.
- Rules merge from [porch] to the site to the route, name by name (a route's `set` of one
  name keeps the site's other names).  nginx's add_header forgets every inherited header
  as soon as a location has one of its own: another trap, not copied.
- Values may name what the request brings: `{client_ip}` (after trusted proxies),
  `{host}`, `{scheme}`, `{request_id}` (the request's X-Request-ID), `{remote_user}`
  (the user an auth policy let in, else empty):
  `request_headers = { set = { "X-Real-IP" = "{client_ip}" } }`.  Other `{...}` are
  refused, so a typo is not sent as it is.
- Names are tokens (RFC 9110 5.6.2); values may not hold CR, LF or NUL (a header cannot
  be split into two).  Framing and hop-by-hop fields (Content-Length,
  Transfer-Encoding, Connection, ...) are Porch's to write, and Host is `upstream_host`:
  rules on them are refused with what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from porch.http.model import Headers, RequestHead, ResponseHead
from porch.pipeline import Context, Policy

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_OPS = ("set", "add", "remove")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# What a value may name, and how it is read from the request (pipeline.Context).
_FILLERS = {
    "client_ip": lambda ctx: ctx.client_ip.encode(),
    "host": lambda ctx: ctx.host.encode(),
    "scheme": lambda ctx: ctx.scheme,
    "remote_user": lambda ctx: str(ctx.vars.get("remote_user", "")).encode(),
    "request_id": lambda ctx: ctx.request_id,
}
# Fields the protocol code writes itself: a rule could only break the framing.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "te",
                      "trailer", "upgrade", "proxy-connection"})


@dataclass(frozen=True)
class HeaderRules:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


def _name(name: Any, where: str, request: bool) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"{where}: {name!r} is not a header name (letters, digits and"
                         " !#$%&'*+-.^_`|~ only)")
    lower = name.lower()
    if lower in _FRAMING:
        raise ValueError(f"{where}: {name} is written by Porch itself (framing and connection"
                         " handling); remove this rule")
    if request and lower == "host":
        raise ValueError(f'{where}: Host is set with upstream_host = "name", not a header rule')
    return name


def _pairs(table: Any, where: str, request: bool) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise ValueError(f'{where}: {table!r} is not a table; write {{ "Name" = "value" }}')
    out = []
    for name, value in table.items():
        _name(name, where, request)
        if not isinstance(value, str):
            raise ValueError(f'{where}.{name}: {value!r} is not a string; write "{name}" = "value"')
        if _BAD_VALUE.search(value):
            raise ValueError(f"{where}.{name}: the value holds a line break or NUL, which would"
                             " split the header; remove it")
        for found in _PLACEHOLDER.findall(value):
            if found not in _FILLERS:
                raise ValueError(f"{where}.{name}: {{{found}}} is not something Porch fills in"
                                 f" (it knows {', '.join('{' + k + '}' for k in _FILLERS)})")
        out.append((name, value))
    return tuple(out)


def _parse(value: Any, request: bool) -> HeaderRules:
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a table; write {{ set = {{ ... }}, add = {{ ... }},"
                         " remove = [ ... ] }")
    unknown = [key for key in value if key not in _OPS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not set, add or remove")
    removed = value.get("remove", [])
    if not isinstance(removed, list):
        raise ValueError(f'remove: {removed!r} is not a list; write remove = ["Name"]')
    return HeaderRules(
        set=_pairs(value.get("set", {}), "set", request),
        add=_pairs(value.get("add", {}), "add", request),
        remove=tuple(_name(name, "remove", request) for name in removed),
    )


def parse_request(value: Any) -> HeaderRules:
    return _parse(value, request=True)


def parse_response(value: Any) -> HeaderRules:
    return _parse(value, request=False)


def merge(outer: HeaderRules, inner: HeaderRules) -> HeaderRules:
    """Inner rules over outer ones, name by name."""
    names = {name.lower() for name, _ in inner.set} | {n.lower() for n in inner.remove}
    return HeaderRules(
        set=tuple(p for p in outer.set if p[0].lower() not in names) + inner.set,
        # an outer rule the inner one repeats is kept once: merging a route's merged
        # rules with its site's again (a `porch check --dump` file) changes nothing
        add=tuple(p for p in outer.add if p[0].lower() not in names and p not in inner.add) + inner.add,
        remove=tuple(n for n in outer.remove if n.lower() not in {s.lower() for s, _ in inner.set}
                     and n not in inner.remove) + inner.remove,
    )


def dump(rules: HeaderRules) -> dict[str, Any]:
    """The rules as porch.toml spells them (`porch check --dump`)."""
    out: dict[str, Any] = {}
    if rules.set:
        out["set"] = dict(rules.set)
    if rules.add:
        out["add"] = dict(rules.add)
    if rules.remove:
        out["remove"] = list(rules.remove)
    return out


def describe(rules: HeaderRules) -> str:
    parts = [f"set {name}: {value}" for name, value in rules.set]
    parts += [f"add {name}: {value}" for name, value in rules.add]
    parts += [f"remove {name}" for name in rules.remove]
    return ", ".join(parts)


class _Rules(Policy):
    __slots__ = ("remove", "set", "add")

    def __init__(self, rules: HeaderRules, env: object = None) -> None:
        # Encoded once; `remove` also drops what `set` replaces.
        self.remove = frozenset(n.lower().encode() for n in rules.remove) | frozenset(
            n.lower().encode() for n, _ in rules.set)
        self.set = tuple((n.encode(), _template(v)) for n, v in rules.set)
        self.add = tuple((n.encode(), _template(v)) for n, v in rules.add)

    def apply(self, headers: Headers, ctx: Context) -> None:
        if self.remove:
            headers.remove_all(self.remove)
        for name, value in self.set:
            headers.add(name, value if type(value) is bytes else _fill(value, ctx))
        for name, value in self.add:
            headers.add(name, value if type(value) is bytes else _fill(value, ctx))


def _template(value: str) -> bytes | tuple:
    """The value's bytes, or (when it names placeholders) its pieces: bytes and fillers."""
    pieces: list = []
    at = 0
    for m in _PLACEHOLDER.finditer(value):
        pieces += (value[at:m.start()].encode(), _FILLERS[m.group(1)])
        at = m.end()
    if not pieces:
        return value.encode()
    pieces.append(value[at:].encode())
    return tuple(pieces)


def _fill(pieces: tuple, ctx: Context) -> bytes:
    return b"".join(p if type(p) is bytes else p(ctx) for p in pieces)


class RequestHeaders(_Rules):
    name = "request_headers"

    def upstream_request(self, ctx: Context, head: RequestHead) -> None:
        self.apply(head.headers, ctx)


class ResponseHeaders(_Rules):
    name = "response_headers"

    def response(self, ctx: Context, head: ResponseHead) -> None:
        self.apply(head.headers, ctx)
