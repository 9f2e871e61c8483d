"""`forward_auth`: ask an authentication service about every request (nginx's
auth_request, Traefik's ForwardAuth, Caddy's forward_auth), as Authelia, Authentik
and oauth2-proxy expect:

    forward_auth = { url = "http://127.0.0.1:9091/api/verify", copy_headers = ["Remote-User", "Remote-Groups"], timeout = "5s" }
    forward_auth = false       # on a route: not asked there

- Per request, a subrequest `GET url` carrying what the service needs to decide:
  X-Forwarded-Method, -Proto, -Host (as the client sent Host, port included), -Uri
  (the path as routed, cleaned of dot segments, and the query), -For (the client's address after trusted proxies),
  X-Original-URL (nginx's auth_request examples), X-Request-ID, and the client's
  Cookie, Authorization, Accept, X-Requested-With and User-Agent (nothing else of the
  client's: nginx passes every field, a body's framing included).  No body.  It goes through the same keep-alive pools as
  proxied requests (upstream/pool.py; shared with a route that proxies to the same
  address), on the connection class they use (upstream/connection.py, whose
  listener interface the subrequest implements: upstream/listener.py).
- A 2xx lets the request through: each `copy_headers` field is set upstream from the
  service's answer, and removed when the answer lacks it, so a client can never
  supply it (those names are also on the identity list stripped from every client
  request: `identity_names`).  The first of them that names a user (Remote-User,
  X-Remote-User, X-Forwarded-User, X-Auth-Request-User, X-WebAuth-User) is the
  request's `remote_user` (access log, `{remote_user}` in header rules).
- Any other answer goes to the client as it is: its status, its fields but hop-by-hop
  and framing ones (WWW-Authenticate, Location, Set-Cookie, Content-Type ...) and its
  body, up to 64 KiB (nginx's auth_request passes only the status and a few fields;
  Traefik and Caddy pass the whole answer, which login redirects need).
- The service down, too slow (`timeout`, 5 s by default, for connecting and
  answering), a broken answer or one whose body passes 64 KiB: 502 (504 for the
  timeout) with an error-log line.  Never an open door.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from porch.config.model import UpstreamTarget
from porch.config.units import format_duration, parse_duration
from porch.http.h1 import CRLF, RH_LOCATION, RH_REFRESH, SEP
from porch.http.model import Headers, RequestHead
from porch.pipeline import Context, Policy, Reply
from porch.upstream.connection import UpstreamConnection
from porch.upstream.listener import UpstreamListener
from porch.upstream.pool import Target
from porch.upstream.tls import client_context, tls_failure

_KEYS = ("url", "copy_headers", "timeout")
_EXAMPLE = ('{ url = "http://127.0.0.1:9091/api/verify", copy_headers = ["Remote-User"],'
            ' timeout = "5s" }')
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# Fields Porch writes itself (framing, connection handling, Host): never copied.
_NOT_COPIED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "te",
                         "trailer", "upgrade", "proxy-connection", "host"})
# Copied fields that name the user the service let in (the first one found is remote_user).
_USER_FIELDS = frozenset({"remote-user", "x-remote-user", "x-forwarded-user", "x-auth-request-user",
                          "x-webauth-user"})
# The service's answer body passed to the client, at most (a login page, an error
# page); over it the answer is taken as broken: 502, not a truncated page.
MAX_ANSWER_BODY = 64 * 1024
DEFAULT_TIMEOUT = 5.0
_VAR = "forward_auth"  # ctx.vars key: the copied fields, for the upstream_request hook


@dataclass(frozen=True)
class ForwardAuth:
    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query sent in the request line
    copy_headers: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT


def parse(value: Any) -> ForwardAuth | None:
    if value is False:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a table; write {_EXAMPLE}, or false to turn it off")
    unknown = [key for key in value if key not in _KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(_KEYS)}")
    if "url" not in value:
        raise ValueError(f"url is missing; write {_EXAMPLE}")
    scheme, host, port, target = _url(value["url"])
    timeout = value.get("timeout", DEFAULT_TIMEOUT)
    try:
        seconds = parse_duration(timeout)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"timeout: {exc}") from None
    if seconds <= 0:
        raise ValueError(f'timeout: {timeout!r} is not above zero; write timeout = "5s"')
    return ForwardAuth(value["url"], scheme, host, port, target, _copy_headers(value.get("copy_headers", [])),
                       seconds)


def _url(url: Any) -> tuple[str, str, int, str]:
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f'url: {url!r} is not an http:// or https:// URL; write url = "http://127.0.0.1:9091/api/verify"')
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url: {url!r} is not a valid URL ({exc}); write it as http://host:port/path") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f'url: {url!r} is not an http:// or https:// URL; write url = "http://127.0.0.1:9091/api/verify"')
    if not parts.hostname or "@" in parts.netloc or parts.fragment:
        raise ValueError(f"url: {url!r} needs a host, and takes no user info nor #fragment;"
                         " write it as http://host:port/path")
    if any(c in url for c in " \r\n\t\x00"):
        raise ValueError(f"url: {url!r} holds white space or a control character; percent-encode it")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), target


def _copy_headers(names: Any) -> tuple[str, ...]:
    if not isinstance(names, list):
        raise ValueError(f'copy_headers: {names!r} is not a list; write copy_headers = ["Remote-User"]')
    out = []
    for name in names:
        if not isinstance(name, str) or not name or not set(name.encode()) <= _TOKEN:
            raise ValueError(f"copy_headers: {name!r} is not a header name (letters, digits and"
                             " !#$%&'*+-.^_`|~ only)")
        if name.lower() in _NOT_COPIED:
            raise ValueError(f"copy_headers: {name} is written by Porch itself; remove it from the list")
        out.append(name)
    return tuple(out)


def describe(config: ForwardAuth | None) -> str:
    if config is None:
        return "off"
    copied = f", copies {', '.join(config.copy_headers)}" if config.copy_headers else ""
    return f"{config.url}{copied}, timeout {config.timeout:g}s"


def dump(config: ForwardAuth | None) -> dict[str, Any] | bool:
    """The value as porch.toml spells it (`porch check --dump`), read back by `parse`."""
    if config is None:
        return False
    return {"url": config.url, "copy_headers": list(config.copy_headers),
            "timeout": format_duration(config.timeout)}


def identity_headers(config: ForwardAuth | None) -> tuple[str, ...]:
    """The fields set upstream from the service's answer: never taken from a client,
    on every site and route (registry.PolicySpec.identity, server/client.py)."""
    return () if config is None else config.copy_headers


def identity_names(config: ForwardAuth | None) -> tuple[str, ...]:
    """The fields this config trusts from the service's answer, lowercase: they are
    identity headers, to be removed from every client request before any policy runs
    (http/forwarding.py's IDENTITY is the fixed list; these are the configured ones)."""
    return () if config is None else tuple(name.lower() for name in config.copy_headers)


def build(config: ForwardAuth | None, env: Any = None) -> Policy | None:
    if config is None:
        return None
    spec = UpstreamTarget(config.scheme, config.host, config.port)
    shared = getattr(env, "upstream", None)
    if shared is not None:
        target = shared(spec)  # the pool of this address, shared with routes (config/compile.py)
    else:
        tls = client_context() if config.scheme == "https" else None
        target = Target(spec, tls, error_log=getattr(env, "error_log", None))
    return ForwardAuthPolicy(config, target)


class _Answer(UpstreamListener):
    """The service's answer, as an upstream connection hands it over: its final head
    and its body; `done` resolves with None once it is whole, or with what broke."""

    __slots__ = ("done", "status", "lines", "special", "keep_alive", "body", "size", "got_bytes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.done: asyncio.Future = loop.create_future()
        self.status = 0
        self.lines: list[bytes] = []
        self.special: list | None = None
        self.keep_alive = False
        self.body: list[bytes] = []
        self.size = 0
        self.got_bytes = False

    def on_response_head(self, status: int, reason: bytes, lines: list, special: Any,
                         keep_alive: bool) -> None:
        self.got_bytes = True
        if status >= 200:  # a 1xx is followed by the final answer
            self.status = status
            self.lines = lines
            self.special = special
            self.keep_alive = keep_alive

    def on_response_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_ANSWER_BODY:
            self._end(f"its answer's body passed {MAX_ANSWER_BODY // 1024} KiB")
        elif not self.done.done():
            self.body.append(data)

    def on_response_end(self) -> None:
        self._end(None)

    def on_upstream_lost(self, cause: str, got_bytes: bool) -> None:
        self.got_bytes = self.got_bytes or got_bytes
        self._end(cause)

    def _end(self, problem: str | None) -> None:
        if not self.done.done():
            self.done.set_result(problem)


class _Broken(Exception):
    """The service could not be asked, or its answer is not one."""


class ForwardAuthPolicy(Policy):
    name = "forward_auth"
    __slots__ = ("config", "target", "url", "path", "authority", "copied", "strip", "user_field")

    def __init__(self, config: ForwardAuth, target: Target) -> None:
        self.config = config
        self.target = target
        self.url = config.url
        self.path = config.target.encode()
        default = 443 if config.scheme == "https" else 80
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.authority = (host if config.port == default else f"{host}:{config.port}").encode()
        self.copied = tuple(name.encode() for name in config.copy_headers)
        # what the upstream_request hook removes: the names in both spellings
        names = identity_names(config)
        self.strip = frozenset(n.encode() for n in names) | frozenset(n.replace("-", "_").encode() for n in names)
        self.user_field = next((n for n in self.copied if n.lower().decode() in _USER_FIELDS), None)

    # -- phase 1: ask ----------------------------------------------------------

    def request(self, ctx: Context) -> Any:
        return self._check(ctx)

    async def _check(self, ctx: Context) -> Reply | None:
        timeout = self.config.timeout
        try:
            answer = await asyncio.wait_for(self._ask(ctx), timeout)
        except asyncio.TimeoutError:
            return Reply(504, cause=f"forward_auth: {self.url} did not answer within {timeout:g}s")
        except _Broken as exc:
            return Reply(502, cause=f"forward_auth: {self.url}: {exc}")
        if 200 <= answer.status < 300:
            self._let_in(ctx, Headers(answer.lines))
            return None
        return self._pass_back(answer)

    async def _ask(self, ctx: Context) -> _Answer:
        """The service's whole answer, on a pooled connection or a new one.  A pooled
        one the service had closed (its keep-alive timeout) is retried once on a new
        connection: the subrequest is a GET, safe to send again (RFC 9110 9.2.2)."""
        loop = asyncio.get_running_loop()
        head = self._head(ctx)
        target = self.target
        conn = target.take_idle(loop.time())
        while True:
            if conn is None:
                conn = await self._connect(loop)
            answer = _Answer(loop)
            conn.lease(answer, False)
            conn.transport.write(head)
            try:
                problem = await answer.done
            except BaseException:  # cancelled: the timeout, or the client left
                conn.abort()
                raise
            if problem is None and answer.status:
                if answer.keep_alive and conn.is_usable():
                    target.put_idle(conn, loop.time())
                else:
                    conn.close()
                return answer
            conn.abort()
            if conn.reused and not answer.got_bytes:
                conn = None  # once: a fresh connection is not `reused`
                continue
            raise _Broken(problem or "no answer")

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        target = self.target
        try:
            _, conn = await loop.create_connection(
                partial(UpstreamConnection, target), target.host, target.port,
                ssl=target.ssl, server_hostname=target.server_hostname)
        except OSError as exc:
            reason = exc.strerror or exc if target.ssl is None else tls_failure(exc)
            raise _Broken(f"connecting failed: {reason}") from None
        return conn

    def _head(self, ctx: Context) -> bytes:
        """The subrequest: what the service needs to decide, nothing else of the client's."""
        request = ctx.request
        host = ctx.host_header or ctx.host.encode()
        uri = request.target  # path (clean) and query, as routed
        fields = [
            b"GET ", self.path, b" HTTP/1.1\r\nHost: ", self.authority,
            b"\r\nX-Forwarded-Method: ", ctx.method,
            b"\r\nX-Forwarded-Proto: ", ctx.scheme,
            b"\r\nX-Forwarded-Host: ", host,
            b"\r\nX-Forwarded-Uri: ", uri,
            b"\r\nX-Forwarded-For: ", ctx.client_ip.encode(),
            b"\r\nX-Original-URL: ", ctx.scheme, b"://", host, uri,
            b"\r\nX-Request-ID: ", ctx.request_id, CRLF,
        ]
        _client_fields(request, fields)
        fields.append(CRLF)
        return b"".join(fields)

    # -- the answer ------------------------------------------------------------

    def _let_in(self, ctx: Context, answer: Headers) -> None:
        copied = []
        for name in self.copied:
            value = answer.get(name)
            if value is not None:
                copied.append((name, value))
                if name is self.user_field:
                    ctx.vars["remote_user"] = value.decode("latin-1")
        ctx.vars[_VAR] = tuple(copied)

    def _pass_back(self, answer: _Answer) -> Reply:
        """The service's refusal (401, a 302 to its login page ...) as it is."""
        lines = list(answer.lines)
        for kind, name, value in answer.special or ():
            if kind == RH_LOCATION or kind == RH_REFRESH:  # its own URLs: passed as they are
                lines += (name, SEP, value, CRLF)
        cause = f"forward_auth: {self.url} answered {answer.status}" if answer.status >= 500 else ""
        return Reply(answer.status, b"".join(answer.body), Headers(lines), cause)

    # -- phase 2: the copied fields go upstream ----------------------------------

    def upstream_request(self, ctx: Context, head: RequestHead) -> None:
        headers = head.headers
        headers.remove_all(self.strip)
        for name, value in ctx.vars.get(_VAR, ()):
            headers.add(name, value)


# The client's fields the service gets besides Cookie: who asks (Authorization), and
# whether a browser or a script asks (Authelia and oauth2-proxy redirect a browser
# to their login page and answer 401 to the rest).
_PASSED = (b"Authorization", b"Accept", b"X-Requested-With", b"User-Agent")


def _client_fields(request: RequestHead, fields: list[bytes]) -> None:
    """The client's Cookie (HTTP/2 may split it: joined, RFC 9113 8.2.3) and the
    fields of _PASSED, the first of each."""
    headers = request.headers
    cookies = headers.get_all(b"cookie")
    if cookies:
        fields += (b"Cookie: ", b"; ".join(cookies), CRLF)
    for name in _PASSED:
        value = headers.get(name)
        if value is not None:
            fields += (name, SEP, value, CRLF)
