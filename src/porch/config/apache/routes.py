"""One Apache ProxyPass (with the directives around it) -> one porch.toml route.

    ProxyPass /app/ http://127.0.0.1:8080/base/      path = "/app/", proxy = ".../base",
                                                     strip_prefix = true
    <Location /app/> ProxyPass http://... </Location> the same
    ProxyPreserveHost Off (httpd's default)          upstream_host = the URL's host[:port]
    RequestHeader set|unset|add, Header [always] set|unset|add
                                                     request_headers, response_headers
    LimitRequestBody N (httpd >= 2.4.54: 1 GiB when silent), ProxyTimeout, Timeout
                                                     max_body, upstream_timeout
    AuthType Basic + AuthName + AuthUserFile + Require valid-user
                                                     basic_auth = { htpasswd, realm }
    Require ip / not ip / all ..., <RequireAll>, <RequireAny>, Order + Allow/Deny from
                                                     allow, deny (access.py)

`Scope` is a vhost's directives with a <Location>'s over them (httpd merges
<Location> over the vhost, the last one written winning).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from porch.config.apache import access
from porch.config.apache.parse import Directive
from porch.config.nginx.locations import _proxy_host

APACHE_MAX_BODY = "1G"  # LimitRequestBody's default since httpd 2.4.54 (it was unlimited)
_WS = {"ws": "http", "wss": "https"}
# ProxyPass key=value parameters Porch does without (its pool keeps connections itself)
_AUTHZ = ("require", "requireall", "requireany")
_COMPAT = ("order", "allow", "deny")
_POOL_PARAMS = ("keepalive", "retry", "disablereuse", "enablereuse", "max", "smax", "ttl",
                "acquire", "flushpackets", "flushwait", "ping", "iobuffersize", "receivebuffersize")


class Problem(Exception):
    pass


@dataclass
class Scope:
    """Directives by lowercase name, the outer scope's (the vhost's, read when a route
    is built, so lines after the <Location> count too) first, then its own."""

    items: list[Directive] = field(default_factory=list)
    outer: Scope | None = None

    def get(self, key: str) -> list[Directive]:
        inherited = self.outer.get(key) if self.outer is not None else []
        return inherited + [d for d in self.items if d.key == key]

    def one(self, key: str) -> Directive | None:
        found = self.get(key)
        return found[-1] if found else None


@dataclass
class Proxy:
    """A ProxyPass: the path it maps and its directive."""

    path: str
    url: str
    params: tuple[str, ...]
    directive: Directive
    scope: Scope


class RouteBuilder:
    def __init__(self, ctx: Any, proxy: Proxy) -> None:
        self.ctx = ctx
        self.p = proxy
        self.scope = proxy.scope
        self.values: dict[str, Any] = {"path": proxy.path}
        self.origins: dict[str, Directive] = {"path": proxy.directive}
        self.authz = access.Access()

    def set(self, key: str, value: Any, d: Directive) -> None:
        self.values[key] = value
        self.origins[key] = d

    def build(self) -> bool:
        for step in (self.proxy, self.host, self.request_headers, self.response_headers,
                     self.limits, self.addresses, self.basic_auth, self.upstream_tls):
            try:
                step()
            except (Problem, access.AccessProblem) as e:
                self.ctx.problems.append(str(e))
                return False
        return True

    def proxy(self) -> None:
        d, url = self.p.directive, self.p.url
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme in _WS:
            self.ctx.warn(d, f"{url}: Porch passes WebSocket upgrades on every route with no line"
                          " (mod_proxy_wstunnel is not needed); read as "
                          f"{_WS[scheme]}://{parts.netloc}{parts.path}")
            scheme = _WS[scheme]
        if scheme not in ("http", "https") or not parts.netloc:
            raise Problem(f"{d.origin}: {url} is not an http://, https:// or ws:// URL (unix:, fcgi://,"
                          " ajp:// are not supported); have the app listen on 127.0.0.1")
        for param in self.p.params:
            self.param(d, param)
        path = self.p.path
        base = parts.path
        if path.endswith("/") != base.endswith("/") and base:
            self.ctx.warn(d, f"httpd joins {base} and the rest of the path after {path} as strings"
                          f" (its manual: end both with / or neither); Porch sends {base.rstrip('/')}/x"
                          f" for {path.rstrip('/')}/x: write ProxyPass {path.rstrip('/')}/ ...{base.rstrip('/')}/")
        self.set("proxy", f"{scheme}://{parts.netloc}{base.rstrip('/')}", d)
        if path != "/":
            self.set("strip_prefix", True, d)
        self.reverse(parts)

    def param(self, d: Directive, param: str) -> None:
        key, _, value = param.partition("=")
        key = key.lower()
        if key == "upgrade":
            self.ctx.warn(d, f"{param}: Porch passes WebSocket upgrades with no setting; remove it")
        elif key in ("timeout", "connectiontimeout") and value.isdigit():
            self.set("upstream_timeout" if key == "timeout" else "upstream_connect_timeout", f"{value}s", d)
        elif key in _POOL_PARAMS:
            self.ctx.warn(d, f"{param}: has no effect here (Porch keeps and reuses upstream connections"
                          " itself)")
        else:
            raise Problem(f"{d.origin}: {param}: this ProxyPass parameter is not supported (timeout,"
                          " connectiontimeout and upgrade are); remove it")

    def reverse(self, parts: Any) -> None:
        """ProxyPassReverse: Porch rewrites Location fields that name the upstream anyway."""
        found = [d for d in self.scope.get("proxypassreverse")
                 if (d.args[-1:] and urlsplit(d.args[-1]).netloc == parts.netloc)]
        if not found:
            self.ctx.warn(self.p.directive, "has no ProxyPassReverse: httpd passes the upstream's"
                          " Location fields as they are; Porch rewrites those naming the upstream to"
                          " the client's origin (what ProxyPassReverse does)")

    def host(self) -> None:
        d = self.scope.one("proxypreservehost")
        if d is not None and _on(d):
            return  # Porch sends the client's Host
        parts = urlsplit(self.p.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1))
        # httpd's default (ProxyPreserveHost Off): Host is the ProxyPass URL's host[:port]
        self.values["upstream_host"] = _proxy_host(parts)
        self.origins["upstream_host"] = d or Directive(
            "ProxyPass (httpd's default ProxyPreserveHost Off)", (), self.p.directive.file, self.p.directive.line)

    def request_headers(self) -> None:
        rules = self.headers("requestheader", request=True)
        if rules:
            self.values["request_headers"] = rules

    def response_headers(self) -> None:
        rules = self.headers("header", request=False)
        if rules:
            self.values["response_headers"] = rules

    def headers(self, key: str, request: bool) -> dict[str, Any]:
        rules: dict[str, Any] = {}
        for d in self.scope.get(key):
            args = list(d.args)
            if not request and args[:1] and args[0].lower() in ("always", "onsuccess"):
                args = args[1:]
            if args and (args[-1] == "early" or args[-1].startswith(("env=", "expr="))):
                raise Problem(f"{d.origin}: {args[-1]}: conditions are not supported; write the header"
                              " without it")
            action = args[0].lower() if args else ""
            if action == "unset" and len(args) == 2:
                rules.setdefault("remove", []).append(args[1])
            elif action in ("set", "add", "append", "setifempty") and len(args) == 3:
                if "%{" in args[2] or "%" in args[2].replace("%%", ""):
                    raise Problem(f"{d.origin}: {args[2]}: httpd's %-formats are not supported; write"
                                  " a constant value (Porch sends X-Forwarded-* itself)")
                op = "set" if action in ("set", "setifempty") else "add"
                if action == "append":
                    self.ctx.warn(d, f"{args[1]}: append joins values with a comma in httpd; Porch"
                                  " adds a second field (same meaning for list fields)")
                rules.setdefault(op, {})[args[1]] = args[2].replace("%%", "%")
            else:
                raise Problem(f"{d.origin}: {' '.join(d.args)}: only set, add, append and unset"
                              " NAME [VALUE] are supported")
            self.origins.setdefault("request_headers" if request else "response_headers", d)
        return rules

    def limits(self) -> None:
        d = self.scope.one("limitrequestbody")
        if d is None:
            self.values["max_body"] = APACHE_MAX_BODY
            self.origins["max_body"] = Directive("ProxyPass (httpd's default LimitRequestBody 1 GiB)",
                                                 (), self.p.directive.file, self.p.directive.line)
        elif len(d.args) != 1 or not d.args[0].isdigit():
            raise Problem(f"{d.origin}: takes a number of bytes (0: no limit)")
        else:
            self.set("max_body", "off" if d.args[0] == "0" else d.args[0], d)
        d = self.scope.one("proxytimeout") or self.scope.one("timeout")
        if d is not None and "upstream_timeout" not in self.values:
            if len(d.args) != 1 or not d.args[0].isdigit():
                raise Problem(f"{d.origin}: takes a number of seconds")
            self.set("upstream_timeout", f"{d.args[0]}s", d)

    def addresses(self) -> None:
        """Require (ip, not ip, all, local), its containers and Order/Allow/Deny: the
        <Location>'s (httpd refuses them in a <VirtualHost>: build.py says so)."""
        rules = _innermost(self.scope, _AUTHZ)
        compat = _innermost(self.scope, _COMPAT)
        if rules and compat:
            raise Problem(f"{compat[0].origin}: Order/Allow/Deny (mod_access_compat) and Require lines"
                          f" ({rules[0].file}:{rules[0].line}) both apply here in httpd (Satisfy decides"
                          " how); keep the Require lines only")
        if rules:
            self.authz = access.require(rules)
            first = rules[0]
        elif compat:
            order = next((d for d in compat if d.key == "order"), None)
            self.authz = access.compat(order, [d for d in compat if d.key == "allow"],
                                       [d for d in compat if d.key == "deny"])
            first = compat[0]
        else:
            return
        if self.authz.allow is not None:
            self.ctx.needs("allow", first, self.values, self.authz.allow, self.origins)
        if self.authz.deny:
            self.ctx.needs("deny", first, self.values, self.authz.deny, self.origins)

    def basic_auth(self) -> None:
        kind = self.scope.one("authtype")
        require = _flat(_innermost(self.scope, _AUTHZ))
        if kind is None:
            if self.authz.users:
                d = next(r for r in require if r.args[:1] in (("valid-user",), ("user",), ("group",)))
                raise Problem(f"{d.origin}: {' '.join(d.args)} without AuthType Basic: httpd lets"
                              " nobody in (500); add AuthType Basic, AuthName and AuthUserFile")
            return
        if kind.args[:1] != ("Basic",) and [a.lower() for a in kind.args] != ["basic"]:
            raise Problem(f"{kind.origin}: only AuthType Basic is supported")
        users = self.scope.one("authuserfile")
        if users is None or not users.args:
            raise Problem(f"{kind.origin}: has no AuthUserFile; add the htpasswd file's path")
        if not self.authz.users:
            if self.authz.allow is None and not self.authz.deny and any(r.args for r in require):
                return  # Require all granted: httpd asks for no password
            raise Problem(f"{kind.origin}: has no Require valid-user; httpd asks for no password"
                          " without it: add Require valid-user")
        realm = self.scope.one("authname")
        # httpd reads a relative AuthUserFile from the ServerRoot
        path = os.path.join(self.ctx.parsed.root, users.args[0])
        value = {"htpasswd": path, "realm": realm.args[0] if realm and realm.args else ""}
        others = [r for r in require if r.args[:1] in (("user",), ("group",))]
        if others:
            raise Problem(f"{others[0].origin}: Require {others[0].args[0]} NAME is not supported; put"
                          " only those users in the htpasswd file and write Require valid-user")
        self.ctx.needs("basic_auth", kind, self.values, value, self.origins)

    def upstream_tls(self) -> None:
        if not self.values["proxy"].startswith("https://"):
            return
        d = self.scope.one("sslproxyverify")
        if d is not None and d.args[:1] and d.args[0].lower() == "require":
            ca = self.scope.one("sslproxycacertificatefile")
            tls = {"ca": ca.args[0]} if ca is not None and ca.args else {}
            if tls:
                self.set("upstream_tls", tls, ca)
            return
        engine = self.scope.one("sslproxyengine")
        if engine is None or not _on(engine):
            self.ctx.warn(self.p.directive, "an https:// upstream needs SSLProxyEngine On in httpd"
                          " (it answers 500 without); Porch connects with TLS all the same")
        self.set("upstream_tls", {"verify": False}, d or self.p.directive)
        self.ctx.warn(d or self.p.directive, "httpd does not check the upstream's certificate unless"
                      " SSLProxyVerify require, so neither does Porch here; porch.toml: leave"
                      ' upstream_tls out (system CAs), or upstream_tls = { ca = "cert.pem" }')


def _innermost(scope: Scope | None, keys: tuple[str, ...]) -> list[Directive]:
    """The directives of `keys` at the innermost level that has any (a <Location>'s
    replace its VirtualHost's)."""
    while scope is not None:
        own = [d for d in scope.items if d.key in keys]
        if own:
            return own
        scope = scope.outer
    return []


def _flat(items: list[Directive]) -> list[Directive]:
    out: list[Directive] = []
    for d in items:
        out += _flat(list(d.block)) if d.block is not None else [d]
    return out


def _on(d: Directive) -> bool:
    if len(d.args) != 1 or d.args[0].lower() not in ("on", "off"):
        raise Problem(f"{d.origin}: {' '.join(d.args)!r} is not On or Off")
    return d.args[0].lower() == "on"


def on(d: Directive) -> bool:
    return _on(d)
