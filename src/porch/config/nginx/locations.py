"""One nginx `location` (with what it inherits) -> one porch.toml route's values.

`Scope` is nginx's inheritance: http -> server -> location, the innermost level that
writes a directive winning (for proxy_set_header and add_header too: a location with
one add_header forgets the server's, which is a trap we keep and warn about).
`route()` returns the route's values and, for each key, the directive it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from porch.config.nginx import directives as table
from porch.config.nginx.parse import Directive
from porch.config.nginx.variables import Problem, duration, header_value, on_off, size


@dataclass
class Scope:
    """Directives by name at one level, and the level around it."""

    own: dict[str, list[Directive]] = field(default_factory=dict)
    outer: Scope | None = None

    def add(self, d: Directive) -> None:
        self.own.setdefault(d.name, []).append(d)

    def get(self, name: str) -> list[Directive]:
        level: Scope | None = self
        while level is not None:
            if name in level.own:
                return level.own[name]
            level = level.outer
        return []

    def one(self, name: str) -> Directive | None:
        found = self.get(name)
        return found[-1] if found else None

    def level_of(self, name: str) -> Scope | None:
        level: Scope | None = self
        while level is not None:
            if name in level.own:
                return level
            level = level.outer
        return None


@dataclass(frozen=True)
class Upstream:
    """An `upstream name { server ...; }` block as porch.toml values."""

    name: str
    targets: list[Any]  # "host:port" with weight: { url, weight } or "url" later
    pool: dict[str, Any]
    origin: Directive


def auth_request_vars(scope: Scope) -> dict[str, str]:
    """`auth_request_set $user $upstream_http_remote_user;` lines: "$user" -> the
    auth answer's field name ("remote-user")."""
    out = {}
    for d in scope.get("auth_request_set"):
        if len(d.args) == 2 and d.args[1].lower().startswith("$upstream_http_"):
            out[d.args[0]] = d.args[1][len("$upstream_http_"):].lower().replace("_", "-")
    return out


class RouteBuilder:
    """Reads one location; `values` and `origins` (key -> directive) when done."""

    def __init__(self, ctx: Any, location: Directive, scope: Scope, server_names: tuple[str, ...],
                 port: int | None) -> None:
        self.ctx = ctx  # the Builder: problems, warnings, upstreams, maps, has_key
        self.location = location
        self.scope = scope
        self.values: dict[str, Any] = {}
        self.origins: dict[str, Directive] = {}
        self.constants = {"server_name": server_names[0] if server_names else ""}
        if port is not None:
            self.constants["server_port"] = str(port)

    def set(self, key: str, value: Any, d: Directive) -> None:
        self.values[key] = value
        self.origins[key] = d

    def problem(self, d: Directive, message: str) -> None:
        self.ctx.problems.append(f"{d.origin}: {message}")

    def warn(self, d: Directive, message: str) -> None:
        self.ctx.warn(d, message)

    def build(self) -> bool:
        """False when the location cannot be a route (reported)."""
        if not self.matcher():
            return False
        proxy = self.scope.one("proxy_pass")
        if proxy is None and self.scope.one("root") is None:
            # nginx would serve files from its own default html directory
            self.problem(self.location, "has no proxy_pass and no root; Porch routes go to an"
                         " upstream (proxy_pass) or serve files from a root; write one of them")
            self.policies()
            return False
        if proxy is None:  # static files only: root (policies.py reads root, index, try_files)
            for step in (self.response_headers, self.limits, self.policies):
                try:
                    step()
                except Problem as e:
                    self.problem(getattr(e, "directive", self.location), str(e))
            return True
        for step in (self.proxy, self.request_headers, self.response_headers, self.limits,
                     self.upstream_tls, self.policies, self.traps):
            try:
                step(proxy) if step in (self.proxy, self.upstream_tls) else step()
            except Problem as e:  # a step stops at its first problem
                self.problem(getattr(e, "directive", proxy), str(e))
        return True

    # --- where: the location's matcher --------------------------------------------

    def matcher(self) -> bool:
        d = self.location
        args = d.args
        if len(args) == 1:
            modifier, path = "", args[0]
        elif len(args) == 2:
            modifier, path = args
        else:
            self.problem(d, "takes [modifier] path; write location /app/ { ... }")
            return False
        if modifier == "" and path.startswith("@"):
            self.problem(d, f"{path} is a named location (for error_page and try_files), which"
                         " Porch has no use for; remove it")
            return False
        if modifier == "":
            self.set("path", path, d)
        elif modifier == "^~":
            self.set("path", path, d)
            self.ctx.needs("priority", d, self.values, "prefix", self.origins)
        elif modifier in ("~", "~*"):
            self.set("regex", path, d)
            if modifier == "~*":
                self.values["regex_case"] = False
            self.ctx.needs("regex", d, None)
        elif modifier == "=":
            self.set("exact", path, d)
            self.ctx.needs("exact", d, None)
        else:
            self.problem(d, f"{modifier!r} is not a location modifier (=, ^~, ~, ~*)")
            return False
        if any(item.name == "location" for item in d.block or ()):
            nested = next(item for item in d.block or () if item.name == "location")
            self.problem(nested, "nested locations are not supported; write each as its own"
                         " location in the server")
        return True

    # --- to: proxy_pass and Host ---------------------------------------------------

    def proxy(self, d: Directive) -> None:
        if len(d.args) != 1:
            raise _at(d, "takes one URL; write proxy_pass http://127.0.0.1:8080;")
        url = d.args[0]
        if "$" in url:
            raise _at(d, f"{url}: variables in proxy_pass are not supported; write the address")
        if url.startswith("unix:") or "://unix:" in url:
            raise _at(d, f"{url}: UNIX sockets are not supported; have the app listen on 127.0.0.1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _at(d, f"{url} is not an http:// or https:// URL")
        uri = url[len(parts.scheme) + 3 + len(parts.netloc):]
        location = self.values.get("path")
        upstream = self.ctx.upstreams.get(parts.netloc)
        if uri and location is None:
            what = ("an exact location (Porch sends its path unchanged)" if "exact" in self.values
                    else "a regex location (nginx refuses it too)")
            raise _at(d, f"cannot have a URI part in {what};"
                      f" write proxy_pass {parts.scheme}://{parts.netloc};")
        if uri and location is not None:
            self.replacement(d, location, uri)
        base = uri.rstrip("/")
        if upstream is not None:
            targets = [dict(t, url=f"{parts.scheme}://{t['url']}{base}") if t.get("weight", 1) != 1
                       else f"{parts.scheme}://{t['url']}{base}" for t in upstream.targets]
            self.set("proxy", targets if len(targets) > 1 else targets[0], d)
            for key, value in upstream.pool.items():
                self.set(key, value, upstream.origin)
            proxy_host = parts.netloc
        else:
            self.set("proxy", f"{parts.scheme}://{parts.netloc}{base}", d)
            proxy_host = _proxy_host(parts)
        if uri and location not in (None, "/"):
            self.set("strip_prefix", True, d)
        self.host(proxy_host)

    def replacement(self, d: Directive, location: str, uri: str) -> None:
        """nginx replaces the location's prefix by the URI part, joined as strings:
        Porch strips the prefix and puts the base path in front, which is the same
        when both end with a slash or neither does."""
        if location.endswith("/") and not uri.endswith("/"):
            raise _at(d, f"nginx joins {uri} and the rest of the path after {location} with no"
                      f" slash ({location}x -> {uri}x), which is almost always a mistake; write"
                      f" proxy_pass ...{uri}/; (Porch sends {uri}/x)")
        if not uri.endswith("/") and not location.endswith("/"):
            self.warn(d, f"nginx joins {uri} and what follows {location} as strings ({location}x ->"
                      f" {uri}x, {location} -> {uri}); Porch sends {uri}/x and {uri}/: write location"
                      f" {location}/ and proxy_pass ...{uri}/; to mean the same to both")
        if uri.endswith("/") and not location.endswith("/") and location != "/":
            self.warn(d, f"nginx sends {location}/x upstream as {uri}/x (two slashes); Porch sends"
                      f" {uri}x: write location {location}/ to mean that")

    def host(self, proxy_host: str) -> None:
        found = [x for x in self.scope.get("proxy_set_header") if x.args and x.args[0].lower() == "host"]
        if not found:  # nginx's default: Host: $proxy_host
            self.values["upstream_host"] = proxy_host
            self.origins["upstream_host"] = self.scope.one("proxy_pass")
            return
        d = found[-1]
        value = d.args[1] if len(d.args) > 1 else ""
        if value in ("$host", "$http_host", "$host:$server_port"):
            return  # the client's Host, which Porch sends (with its port: see the trap)
        if value == "$proxy_host":
            self.set("upstream_host", proxy_host, d)
        elif "$" not in value and value:
            self.set("upstream_host", value, d)
        else:
            raise _at(d, f"Host {value}: Porch sends the client's Host ($http_host), or"
                      ' upstream_host = "name" (a fixed one); write one of those')

    # --- headers -------------------------------------------------------------------

    def request_headers(self) -> None:
        rules: dict[str, Any] = {}
        copied = auth_request_vars(self.scope)  # forward_auth's copy_headers (policies.py)
        for d in self.scope.get("proxy_set_header"):
            if len(d.args) != 2:
                raise _at(d, "takes a name and a value; write proxy_set_header X-Name value;")
            name, value = d.args
            lower = name.lower()
            if lower == "host" or value in table.FORWARDING_DEFAULTS.get(lower, ()):
                continue  # Host: see host(); the rest is what Porch sends anyway
            if lower in ("connection", "upgrade", "content-length", "transfer-encoding", "te"):
                raise _at(d, f"{name} {value}: Porch writes {name} itself (WebSockets pass with"
                          " no line); remove it")
            if value == f"$http_{lower.replace('-', '_')}":
                continue  # the client's own field, passed as it is
            if value in copied:
                continue
            if lower in table.IDENTITY:
                if value == "$remote_user":
                    continue  # basic_auth's user_header, see policies()
                if "$" in value:
                    raise _at(d, f"{name} {value}: an identity field may only hold $remote_user")
            if value == "":
                rules.setdefault("remove", []).append(name)
            else:
                try:
                    rules.setdefault("set", {})[name] = header_value(value, self.constants)
                except Problem as e:
                    raise _at(d, f"{name}: {e}") from None
            self.origins.setdefault("request_headers", d)
        if rules:
            self.values["request_headers"] = rules

    def response_headers(self) -> None:
        added: dict[str, str] = {}
        for d in self.scope.get("add_header"):
            args = [a for a in d.args]
            if len(args) == 3 and args[2] == "always":
                args = args[:2]
            if len(args) != 2:
                raise _at(d, "takes a name, a value and maybe always; write add_header X-Name value;")
            name, value = args
            if name in added:
                raise _at(d, f"{name} is added twice; Porch's response_headers add one value per"
                          " name here (join them with a comma)")
            try:
                added[name] = header_value(value, self.constants)
            except Problem as e:
                raise _at(d, f"{name}: {e}") from None
            self.origins.setdefault("response_headers", d)
        for d in self.scope.get("proxy_hide_header"):
            self.values.setdefault("response_headers", {}).setdefault("remove", []).extend(d.args)
            self.origins.setdefault("response_headers", d)
        if added:
            self.values.setdefault("response_headers", {})["add"] = added

    # --- limits ----------------------------------------------------------------------

    def limits(self) -> None:
        d = self.scope.one("client_max_body_size")
        if d is None:
            self.values["max_body"] = "1M"  # nginx's default when the file is silent
            loc = self.location
            self.origins["max_body"] = Directive("location (nginx's default client_max_body_size 1m)",
                                                 loc.args, loc.file, loc.line)
        else:
            value = size(_one(d), self.ctx.warnings, d.origin)
            self.set("max_body", "off" if value == "0" else value, d)
        for name, key in (("client_body_timeout", "body_timeout"), ("proxy_read_timeout", "upstream_timeout"),
                          ("proxy_connect_timeout", "upstream_connect_timeout")):
            d = self.scope.one(name)
            if d is not None:
                try:
                    self.set(key, duration(_one(d)), d)
                except Problem as e:
                    raise _at(d, str(e)) from None
        d = self.scope.one("proxy_http_version")
        if d is not None and _one(d) not in ("1.0", "1.1"):
            raise _at(d, f"{_one(d)} is not 1.0 or 1.1")
        d = self.scope.one("proxy_redirect")
        if d is not None and d.args not in (("default",), ("off",)):
            raise _at(d, f"{' '.join(d.args)}: only default is supported (Porch rewrites Location"
                      " fields that name the upstream to the client's origin)")
        if d is not None and d.args == ("off",):
            self.warn(d, "off: Porch still rewrites Location fields that name the upstream"
                      " (proxy_redirect default); a Location naming another host is left as it is")

    # --- upstream TLS ----------------------------------------------------------------

    def upstream_tls(self, proxy: Directive) -> None:
        tls: dict[str, Any] = {}
        origin: Directive | None = None
        for name, key in (("proxy_ssl_trusted_certificate", "ca"), ("proxy_ssl_certificate", "cert"),
                          ("proxy_ssl_certificate_key", "key"), ("proxy_ssl_name", "server_name")):
            d = self.scope.one(name)
            if d is not None:
                tls[key] = _one(d)
                origin = origin or d
                self.origins[f"upstream_tls.{key}"] = d
        d = self.scope.one("proxy_ssl_server_name")
        if d is not None and not on_off(d):
            self.warn(d, "off: Porch sends the server name (SNI) to TLS upstreams all the same")
        verify = self.scope.one("proxy_ssl_verify")
        https = proxy.args and proxy.args[0].startswith("https://")
        if verify is not None:
            tls["verify"] = on_off(verify)
            origin = origin or verify
            self.origins["upstream_tls.verify"] = verify
        elif https:
            tls["verify"] = False  # nginx's default: proxy_ssl_verify off
            self.warn(proxy, "nginx does not check the upstream's certificate unless proxy_ssl_verify"
                      " is on, so neither does Porch here; write proxy_ssl_verify on; (porch.toml:"
                      " leave upstream_tls out, or upstream_tls = { ca = \"cert.pem\" })")
        if tls.get("verify") is False and "ca" in tls:
            where = self.scope.one("proxy_ssl_trusted_certificate")
            self.warn(where, "has no effect without proxy_ssl_verify on (nginx checks nothing);"
                      " write proxy_ssl_verify on; (porch.toml: upstream_tls = { ca = \"...\" })")
            del tls["ca"]
        if tls and https:
            self.values["upstream_tls"] = tls
            self.origins["upstream_tls"] = origin or proxy

    # --- policies from the policies issue --------------------------------------------

    def policies(self) -> None:
        self.ctx.route_policies(self)

    def traps(self) -> None:
        headers = {d.args[0].lower(): d for d in self.scope.get("proxy_set_header") if d.args}
        upgrade, connection = headers.get("upgrade"), headers.get("connection")
        version = self.scope.one("proxy_http_version")
        if (upgrade or connection) and not (upgrade and connection and version and _one(version) == "1.1"):
            d = upgrade or connection
            self.warn(d, "nginx passes WebSocket upgrades only with proxy_http_version 1.1 and both"
                      " Upgrade and Connection lines; Porch passes them with no line (remove these)")
        xff = headers.get("x-forwarded-for")
        if xff is not None and xff.args[1:] == ("$proxy_add_x_forwarded_for",):
            self.warn(xff, "nginx appends to whatever X-Forwarded-For the client sent (anyone can"
                      " forge it); Porch sends the address it saw, and keeps a chain only from"
                      ' [porch] trusted_proxies = ["10.0.0.0/8"] (no line needed)')
        host = headers.get("host")
        port = self.constants.get("server_port")
        if host is not None and host.args[1:] == ("$host",) and port not in (None, "80", "443"):
            self.warn(host, f"$host drops the port (:{port}) that clients send; Porch sends the"
                      " client's Host as it came, port included (no line needed)")
        level = self.scope.level_of("add_header")
        if level is self.scope and self.scope.outer is not None and self.scope.outer.get("add_header"):
            lost = sorted({d.args[0] for d in self.scope.outer.get("add_header")}
                          - {d.args[0] for d in self.scope.own["add_header"]})
            if lost:
                self.warn(self.scope.own["add_header"][0], f"nginx forgets the server's add_header"
                          f" ({', '.join(lost)}) in a location with its own; kept so here."
                          " porch.toml's route response_headers add to the site's instead")


def _one(d: Directive) -> str:
    if len(d.args) != 1:
        raise _at(d, f"takes one value, not {len(d.args)}")
    return d.args[0]


def _at(d: Directive, message: str) -> Problem:
    err = Problem(message)
    err.directive = d  # type: ignore[attr-defined]
    return err


def _proxy_host(parts: Any) -> str:
    """nginx's $proxy_host: the URL's host, with its port unless the scheme's default."""
    default = {"http": 80, "https": 443}[parts.scheme]
    return parts.netloc if parts.port not in (None, default) else parts.hostname
