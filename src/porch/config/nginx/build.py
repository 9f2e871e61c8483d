"""nginx directives -> the values a porch.toml holds, with the origin of each key.

    {"porch": {...}, "site": [{"hosts": [...], "tls": ..., "route": [{...}, ...]}]}

Server blocks that name the same hosts are one site: the `ssl` one gives the routes,
a plain one that redirects to https:// (certbot's `if ($host = ...) { return 301 ...}`,
`return 301 https://$host$request_uri`, `rewrite ^ https://... permanent`) is Porch's
redirect_http, and a plain one alone is a site with tls = "off".  A site with one
`location /` is written as a site with its keys (no route list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from porch.config.frontend import BuildBase, Result
from porch.config.nginx import directives as table
from porch.config.nginx.locations import RouteBuilder, Scope, Upstream
from porch.config.nginx.parse import Directive, Parsed
from porch.config.nginx.policies import route_policies
from porch.config.nginx.variables import Listen, Problem, duration, listen

_HTTPS_REDIRECT = re.compile(r"https://\$(host|server_name)\$request_uri\??")
# nginx's predefined `combined` format (ngx_http_log_module): a log_format with this text
# (whitespace aside) is the same format, which Porch writes as "combined".
_COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent'
             ' "$http_referer" "$http_user_agent"')
_LOG_LEVELS = {"debug": "debug", "info": "info", "notice": "info", "warn": "warn", "error": "error",
               "crit": "error", "alert": "error", "emerg": "error"}


@dataclass
class Server:
    block: Directive
    scope: Scope
    names: tuple[str, ...] = ()
    listens: list[tuple[Listen, Directive]] = field(default_factory=list)
    locations: list[Directive] = field(default_factory=list)
    redirect: Directive | None = None  # the https redirect it answers with
    webroot: Directive | None = None  # location /.well-known/acme-challenge/ { root ...; }

    @property
    def ssl(self) -> bool:
        return any(x.ssl for x, _ in self.listens)

    @property
    def plain(self) -> bool:
        return any(not x.ssl for x, _ in self.listens)


class Builder(BuildBase):
    def __init__(self, parsed: Parsed, known_keys: frozenset[str]) -> None:
        self.parsed = parsed
        self.known = known_keys
        self.problems = list(parsed.problems)
        self.warnings = list(parsed.warnings)
        self.upstreams: dict[str, Upstream] = {}
        self.maps: set[str] = set()
        self.porch: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.zones: dict[str, Directive] = {}
        self.locations: list[Directive] = []  # the server block's being read
        self.log_formats: dict[str, Directive] = {}  # log_format NAME ...: read by access_log

    def needs(self, key: str, d: Directive, values: dict | None, value: Any = None,
              origins: dict | None = None) -> bool:
        """Whether this build has porch.toml's `key`; if not, say so (an error, or a
        warning for directives whose absence changes no answer's meaning)."""
        if key in self.known:
            if values is not None:
                values[key] = value
                if origins is not None:
                    origins[key] = d
            return True
        soft = table.NEEDS_KEY.get(d.name, (key, False))[1]
        message = (f"needs porch.toml's {key} key, which this Porch does not have yet"
                   f" ({'ignored' if soft else 'remove it to load the file without it'})")
        if soft:
            self.warn(d, message)
        else:
            self.problems.append(f"{d.origin}: {message}")
        return False

    def route_policies(self, route: RouteBuilder) -> None:
        route_policies(self, route)

    # --- walking the tree ------------------------------------------------------------

    def run(self) -> Result:
        top = Scope()
        servers: list[Server] = []
        loose: list[Directive] = []
        for d in self.parsed.directives:
            if d.name == "http":
                self.context(d.block or (), top, servers, http=True)
            elif d.name == "events":
                self.warn(d, f"has no effect here ({table.NO_EFFECT['worker_connections']})")
            elif d.name == "location":
                loose.append(d)
            elif d.name == "stream":
                self.problems.append(f"{d.origin}: write [[stream]] tables in a porch.toml for TCP"
                                     " passthrough (README: Port sharing)")
            else:
                self.context((d,), top, servers, http=True)
        if loose:  # Radicale's guide: bare location blocks, meant for a server
            self.warn(loose[0], "outside a server block: read as in a catch-all server on port 80")
            fake = Directive("server", (), loose[0].file, loose[0].line, tuple(loose))
            servers.append(self.server(fake, top))
        sites = self.sites(servers)
        self.global_keys(top)
        return self.result(sites)

    def context(self, items: tuple[Directive, ...], scope: Scope, servers: list[Server], http: bool) -> None:
        """The http level (or the main file's top): servers, upstreams, maps and defaults."""
        for d in items:
            if d.name == "server":
                servers.append(self.server(d, scope))
            elif d.name == "upstream":
                self.upstream(d)
            elif d.name == "map":
                self.map(d)
            elif d.name == "limit_req_zone":
                self.zones[_zone_name(d)] = d
            elif d.name == "log_format" and d.args:
                self.log_formats[d.args[0]] = d  # judged where an access_log names it
            elif d.name in table.NO_EFFECT:
                self.warn(d, f"has no effect here ({table.NO_EFFECT[d.name]})")
            elif d.name in table.ROUTE_SCOPED or d.name in table.SERVER_SCOPED or d.name.startswith("gzip"):
                scope.add(d)
            else:
                self.unknown(d)

    def unknown(self, d: Directive) -> None:
        self.problems.append(f"{d.origin}: is not supported by Porch's nginx reader (docs/nginx.md"
                             " lists what is); write the porch.toml equivalent (porch convert prints"
                             " the rest of this file as porch.toml)")

    def upstream(self, d: Directive) -> None:
        name = d.args[0] if d.args else ""
        targets: list[Any] = []
        pool: dict[str, Any] = {}
        fails: set[tuple[str, str]] = set()
        for item in d.block or ():
            if item.name == "server" and item.args:
                weight = 1
                for flag in item.args[1:]:
                    key, _, value = flag.partition("=")
                    if key == "weight" and value.isdigit():
                        weight = int(value)
                    elif key in ("max_fails", "fail_timeout"):
                        fails.add((key, value))
                    else:
                        self.problems.append(f"{item.origin}: {flag} is not supported (weight,"
                                             " max_fails and fail_timeout are)")
                url = item.args[0]
                targets.append({"url": url, "weight": weight} if weight != 1 else {"url": url})
            elif item.name in ("least_conn", "ip_hash", "random"):
                pool["balance"] = {"least_conn": "least_conn", "ip_hash": "ip_hash", "random": "random_two"}[item.name]
            elif item.name == "hash" and item.args[:1] == ("$request_uri",):
                pool["balance"] = "uri_hash"
            elif item.name in ("keepalive", "keepalive_timeout", "keepalive_requests"):
                self.warn(item, "has no effect here (Porch keeps upstream connections alive by itself)")
            else:
                self.unknown(item)
        for key, value in sorted(fails):
            if len({v for k, v in fails if k == key}) > 1:
                self.problems.append(f"{d.origin}: servers with different {key}; Porch has one per pool")
            try:
                pool[key] = int(value) if key == "max_fails" else duration(value)
            except (ValueError, Problem):
                self.problems.append(f"{d.origin}: {key}={value} is not valid")
        self.upstreams[name] = Upstream(name, targets, pool, d)

    def map(self, d: Directive) -> None:
        """Only the WebSocket map of nginx's docs: Porch does what it is for."""
        entries = {item.name: item.args for item in d.block or ()}
        if d.args[:1] == ("$http_upgrade",) and len(d.args) == 2 and entries.get("default") == ("upgrade",):
            self.maps.add(d.args[1])
            return
        self.problems.append(f"{d.origin}: only the $http_upgrade -> $connection_upgrade map is"
                             " supported (Porch passes WebSocket upgrades by itself)")

    # --- servers -----------------------------------------------------------------------

    def server(self, d: Directive, outer: Scope) -> Server:
        server = Server(d, Scope(outer=outer))
        for item in d.block or ():
            if item.name == "listen":
                try:
                    server.listens.append((listen(item), item))
                except Problem as e:
                    self.problems.append(f"{item.origin}: {e}")
            elif item.name == "server_name":
                server.names += item.args
            elif item.name == "location":
                server.locations.append(item)
            elif item.name in ("return", "rewrite", "if"):
                self.redirect(server, item)
            elif item.name in table.NO_EFFECT:
                self.warn(item, f"has no effect here ({table.NO_EFFECT[item.name]})")
            elif item.name in table.ROUTE_SCOPED or item.name in table.SERVER_SCOPED or item.name.startswith("gzip"):
                server.scope.add(item)
            else:
                self.unknown(item)
        if not server.listens:  # nginx: listen *:80 when the server says nothing
            server.listens.append((Listen(None, 80, False, False, False), d))
        for loc in list(server.locations):
            if self.acme_webroot(server, loc) or self.redirect_location(server, loc):
                server.locations.remove(loc)
        return server

    def redirect(self, server: Server, d: Directive) -> None:
        """The https redirects of the guides; anything else is not supported."""
        if d.name == "if":
            inner = d.block or ()
            if d.args[:2] == ("$host", "=") and len(inner) == 1 and inner[0].name == "return":
                d = inner[0]  # certbot: if ($host = name) { return 301 https://$host$request_uri; }
        if d.name == "return" and len(d.args) == 2 and d.args[0] in ("301", "302", "307", "308") \
                and _HTTPS_REDIRECT.fullmatch(d.args[1]):
            server.redirect = d
            return
        if d.name == "return" and d.args == ("404",) and server.redirect is not None:
            return  # certbot's `return 404; # managed by Certbot` after the if: other hosts
        if d.name == "rewrite" and len(d.args) == 3 and d.args[0] in ("^", "^(.*)$", "^/(.*)$") \
                and _HTTPS_REDIRECT.fullmatch(d.args[1].replace("$1", "$request_uri")) \
                and d.args[2] in ("permanent", "redirect"):
            server.redirect = d
            return
        self.problems.append(f"{d.origin}: only the redirect to https:// (return 301"
                             " https://$host$request_uri) is supported; Porch redirects HTTP to"
                             " HTTPS by itself for sites with TLS")

    def redirect_location(self, server: Server, loc: Directive) -> bool:
        block = loc.block or ()
        if loc.args in (("/",),) and len(block) == 1 and block[0].name in ("return", "rewrite"):
            self.redirect(server, block[0])
            return True
        return False

    def acme_webroot(self, server: Server, loc: Directive) -> bool:
        block = loc.block or ()
        if loc.args == ("/.well-known/acme-challenge/",) and len(block) == 1 and block[0].name == "root":
            server.webroot = block[0]
            return True
        return False

    # --- sites -------------------------------------------------------------------------

    def sites(self, servers: list[Server]) -> list[dict[str, Any]]:
        self.ports(servers)
        groups: dict[tuple[str, ...], list[Server]] = {}
        for server in servers:
            names = tuple(n for n in server.names if n not in ("_", '""', ""))
            groups.setdefault(names, []).append(server)
        return self.grouped_sites(groups)

    def ports(self, servers: list[Server]) -> None:
        """Porch has one HTTP port and one HTTPS port for every site."""
        for ssl, key in ((False, "http_port"), (True, "https_port")):
            seen = [(x, d) for s in servers for x, d in s.listens if x.ssl == ssl]
            ports = sorted({x.port for x, _ in seen})
            if len(ports) > 1:
                other = next(d for x, d in seen if x.port != seen[0][0].port)
                self.problems.append(f"{other.origin}: port {other.args[0]}: Porch serves every site"
                                     f" on one {'HTTPS' if ssl else 'HTTP'} port ({seen[0][0].port}"
                                     f" from {seen[0][1].file}:{seen[0][1].line}); use one port")
            if seen and seen[0][0].port != (443 if ssl else 80):
                self.porch[key] = seen[0][0].port
                self.origins[f"porch.{key}"] = seen[0][1].origin
            defaults = [d for x, d in seen if x.default]
            for d in defaults:
                self.warn(d, "default_server: Porch answers hosts no site names with 404; to serve"
                          " them, add a server block with server_name _;")
        listens = [x for s in servers for x, _ in s.listens]
        if listens and all(x.address for x in listens):
            self.porch["bind"] = sorted({x.address.strip("[]") for x in listens if x.address})
        ssl = [x for x in listens if x.ssl]
        if ssl and not any(x.http2 for x in ssl) and not any(s.scope.get("http2") for s in servers):
            self.porch["http2"] = False  # nginx offers h2 only where the file says so

    def site(self, i: int, names: tuple[str, ...], group: list[Server]) -> dict[str, Any] | None:
        where = f"site[{i}]"
        main, secure, plain = self.split(group, "server block")
        site: dict[str, Any] = {}
        if names:
            site["hosts"] = [self.host(n, main) for n in names]
            self.origins[f"{where}.hosts"] = main.block.first("server_name").origin \
                if main.block.first("server_name") else main.block.origin
        if secure:
            self.tls(site, where, main)
            if main.plain:
                site["redirect_http"] = False
            elif plain and plain[0].locations:
                self.warn(plain[0].block, "Porch answers plain HTTP for these names with a redirect"
                          " to https:// (ACME challenges go to the upstream), not with this block's"
                          " locations; porch.toml: redirect_http = false to serve both alike")
                site["acme_challenge"] = "upstream"
        else:
            site["tls"] = "off"
            if main.redirect is not None:
                self.problems.append(f"{main.redirect.origin}: redirects to https://, but no server"
                                     " block with listen ... ssl serves these names")
                return None
        for server in group:
            if server.webroot is not None:
                root = server.webroot.args[0] if server.webroot.args else ""
                site["acme_challenge"] = {"webroot": root.rstrip("/") or "/"}
                self.origins[f"{where}.acme_challenge"] = server.webroot.origin
        self.site_logs(site, where, main, group)
        routes = self.routes(main, names)
        self.place_routes(site, where, routes)
        if not routes and main.redirect is None:
            self.problems.append(f"{main.block.origin}: has no location with proxy_pass; nginx"
                                 " would serve files from its root, Porch needs an upstream")
            return None
        self.origins.setdefault(where, main.block.origin)
        return site

    def host(self, name: str, server: Server) -> str:
        if name.startswith("~"):
            d = server.block.first("server_name") or server.block
            self.problems.append(f"{d.origin}: {name}: regex server names are not supported; list"
                                 ' the names, or use a wildcard ("*.example.org")')
        if name.startswith(".") and len(name) > 1:
            return "*" + name  # nginx ".example.org" is example.org and *.example.org
        return name

    def tls(self, site: dict[str, Any], where: str, server: Server) -> None:
        cert, key = server.scope.one("ssl_certificate"), server.scope.one("ssl_certificate_key")
        if cert is None:
            self.warn(server.block, "listens with ssl but names no ssl_certificate (nginx fails"
                      " every handshake); Porch gets a certificate itself (tls = \"auto\")")
            return
        cert_path = cert.args[0] if cert.args else ""
        self.tls_files(site, where, cert, cert_path, key.args[0] if key and key.args else cert_path)

    def routes(self, server: Server, names: tuple[str, ...]) -> list[tuple[dict, dict]]:
        port = next((x.port for x, _ in server.listens), None)
        out = []
        self.locations = server.locations  # auth_request names one of them (policies.py)
        for loc in server.locations:
            if any(item.name == "internal" for item in loc.block or ()):
                continue  # reached by auth_request only: forward_auth's url (policies.py)
            scope = Scope(outer=server.scope)
            for item in loc.block or ():
                if item.name in table.NO_EFFECT:
                    self.warn(item, f"has no effect here ({table.NO_EFFECT[item.name]})")
                elif item.name in table.ROUTE_SCOPED or item.name == "proxy_pass" or item.name.startswith("gzip"):
                    scope.add(item)
                elif item.name == "location":
                    pass  # reported by the route builder
                elif item.name == "access_log":
                    pass  # the route's own: route_log
                else:
                    self.unknown(item)
            route = RouteBuilder(self, loc, scope, names, port)
            if route.build():
                self.route_log(route, loc)
                out.append((route.values, route.origins))
        return out

    def route_log(self, route: RouteBuilder, loc: Directive) -> None:
        """A location's own access_log (or off): its route's, as nginx writes that
        location's requests there and not in the server's file."""
        own = [item for item in loc.block or () if item.name == "access_log"]
        if not own:
            return
        d = self.first_log(own, "access log")
        route.values["access_log"] = "off" if d.args[:1] == ("off",) else d.args[0]
        route.origins["access_log"] = d
        fmt = self.access_format(d)
        if fmt is not None and self._shared(d.args[0]):
            route.values["access_log_format"] = fmt
            route.origins["access_log_format"] = d

    # --- [porch] ------------------------------------------------------------------------

    def global_keys(self, top: Scope) -> None:
        """What nginx sets per server but Porch once for all: the first one found."""
        d = top.one("ssl_protocols") or self._first_in_servers("ssl_protocols")
        if d is not None:
            versions = [a.replace("TLSv", "") for a in d.args]
            old = [v for v in versions if v not in ("1.2", "1.3")]
            if old:
                self.warn(d, f"TLSv{', TLSv'.join(old)} dropped: Porch refuses TLS below 1.2 (RFC 8996)")
            kept = [v for v in versions if v in ("1.2", "1.3")]
            if kept:
                self.set_global("tls_protocols", kept, d)
        d = top.one("ssl_ciphers") or self._first_in_servers("ssl_ciphers")
        if d is not None and d.args:
            self.set_global("tls_ciphers", d.args[0], d)
        for name, key in (("keepalive_timeout", "keepalive_timeout"), ("send_timeout", "send_timeout"),
                          ("client_header_timeout", "header_timeout")):
            d = top.one(name) or self._first_in_servers(name)
            if d is not None and d.args:
                try:
                    self.set_global(key, duration(d.args[0]), d)
                except Problem as e:
                    self.problems.append(f"{d.origin}: {e}")
        d = top.one("underscores_in_headers")
        if d is not None:
            self.set_global("underscores_in_headers", d.args == ("on",), d)
        self.logs(top)

    def logs(self, top: Scope) -> None:
        """The http level's access_log and error_log: [porch]'s, for the sites that write
        none of their own (a server's are its site's: site_logs)."""
        access = top.get("access_log")
        if access:
            d = self.first_log(access, "access log")
            self.set_global("access_log", "off" if d.args[:1] == ("off",) else d.args[0], d)
            fmt = self.access_format(d)
            if fmt is not None and self._shared(d.args[0]):
                self.set_global("access_log_format", fmt, d)
        errors = top.get("error_log")
        if errors:
            d = self.first_log(errors, "error log")
            self.set_global("error_log", d.args[0], d)
            if len(d.args) > 1 and d.args[1] in _LOG_LEVELS:
                self.set_global("error_log_level", _LOG_LEVELS[d.args[1]], d)

    def site_logs(self, site: dict[str, Any], where: str, main: Server, group: list[Server]) -> None:
        """A server block's own access_log and error_log: its site's (nginx writes a
        server's requests where its innermost access_log says)."""
        for name, key in (("access_log", "access_log"), ("error_log", "error_log")):
            own = main.scope.own.get(name)
            for other in group:
                theirs = other.scope.own.get(name)
                if other is not main and theirs and [x.args[:1] for x in theirs] != [x.args[:1] for x in own or ()]:
                    whose = f"the one at {main.block.origin}" if own else "[porch]'s"
                    self.warn(theirs[0], f"Porch writes one {name.replace('_', ' ')} per site (these"
                              f" names), {whose}; this line is not used")
            if not own:
                continue
            d = self.first_log(own, name.replace("_", " "))
            if name == "error_log":
                site[key] = d.args[0]
                self.origins[f"{where}.{key}"] = d.origin
                if len(d.args) > 1 and d.args[1] in _LOG_LEVELS:
                    self.warn(d, f"{d.args[1]}: Porch has one error_log_level for every site ([porch]'s)")
                continue
            site[key] = "off" if d.args[:1] == ("off",) else d.args[0]
            self.origins[f"{where}.{key}"] = d.origin
            fmt = self.access_format(d)
            # a file that several sites write gets vhost_combined in Porch; nginx's lines are plain
            if fmt is not None and self._shared(d.args[0]):
                site["access_log_format"] = fmt
                self.origins[f"{where}.access_log_format"] = d.origin

    def first_log(self, found: list[Directive], what: str) -> Directive:
        """nginx writes to every access_log (error_log) of a level; Porch to the first."""
        if found[0].args[:1] and found[0].args[0].startswith(("syslog:", "memory:")):
            self.problems.append(f"{found[0].origin}: {found[0].args[0].split(',')[0]}: Porch writes"
                                 ' logs to files only; write a path ("-": stdout, which journald keeps'
                                 " under systemd)")
        for d in found[1:]:
            if d.args[:1] != found[0].args[:1]:
                self.warn(d, f"Porch writes one {what} here: {found[0].args[0]}"
                          f" ({found[0].origin}); this line is not used")
        return found[0]

    def access_format(self, d: Directive) -> str | None:
        """The porch access_log_format an `access_log PATH [FORMAT ...]` means: "combined"
        for nginx's combined and a log_format equal to it; for another, a warning."""
        if d.args[:1] == ("off",):
            return None
        extra = [a for a in d.args[2:] if not a.startswith(("buffer=", "flush="))]
        if extra:
            self.warn(d, f"{' '.join(extra)}: not supported (Porch batches its writes itself and"
                      " writes every request, uncompressed); ignored")
        name = d.args[1] if len(d.args) > 1 else "combined"
        if name == "combined":
            return "combined"
        fmt = self.log_formats.get(name)
        if fmt is None:
            self.problems.append(f"{d.origin}: {name}: no log_format of this name (nginx refuses the"
                                 " file: unknown log format); write combined or define it")
            return None
        text = "".join(a for a in fmt.args[1:] if not a.startswith("escape="))
        if " ".join(text.split()) == _COMBINED:
            return "combined"
        self.warn(d, f"{name} (log_format at {fmt.origin}): Porch writes its own formats only;"
                  ' this log gets "combined" lines (access_log_format: "combined",'
                  ' "vhost_combined" or "json")')
        return "combined"

    def _shared(self, path: str) -> bool:
        """Whether several levels (http, servers, locations) name this access_log file."""
        named = self._all_in_servers("access_log")
        for server in self._all_in_servers("server"):
            named += [x for loc in _find_all(server, "location") for x in loc.block or () if x.name == "access_log"]
        return sum(1 for d in named if d.args[:1] == (path,)) > 1

    def _first_in_servers(self, name: str) -> Directive | None:
        found = self._all_in_servers(name)
        return found[0] if found else None

    def _all_in_servers(self, name: str) -> list[Directive]:
        out: list[Directive] = []
        for d in self.parsed.directives:
            out += _find(d, name)
        return out


def _find(d: Directive, name: str) -> list[Directive]:
    if d.name == name:
        return [d]
    if d.name in ("http", "server"):
        return [x for item in d.block or () for x in _find(item, name)]
    return []


def _find_all(d: Directive, name: str) -> list[Directive]:
    """Every `name` block under `d`, nested ones included."""
    out: list[Directive] = []
    for item in d.block or ():
        if item.name == name:
            out.append(item)
        out += _find_all(item, name)
    return out


def _zone_name(d: Directive) -> str:
    for arg in d.args:
        if arg.startswith("zone="):
            return arg[5:].split(":")[0]
    return ""
