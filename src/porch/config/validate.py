"""The one validation and defaults step every config front-end ends with.

A front-end (porch.toml: config/toml.py; nginx and Apache files later) turns its
syntax into the values porch.toml would hold, and a map of where each came from
(`Origins`: key path -> "file:line"), then calls `load_data`.  It runs in three steps
so that one run reports every problem it can:

1. each table is read against its key table (config/keys.py: key -> parser).  A bad
   value becomes a problem naming its key path (`site[2].route[0].proxy`) and is kept
   as `BAD`, so later steps neither use it nor complain about it a second time;
2. checks across tables: a host in two sites on one listener, two catch-all sites, a
   path twice in one site, a route that ends up with no upstream;
3. the model is built, most specific value first: route over site over the `[porch]`
   defaults over the model's defaults; then config/checks.py looks at the whole model.

Nothing is returned if any problem was found: `ConfigError` carries them all, each
with its origin when the front-end gave one (`porch.toml:12: site[0].proxy: ...`).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from typing import Any

from porch.config import admin, checks, listeners, matchers, upstreams
from porch.config.errors import ConfigError, Origins, locate
from porch.config.keys import (GLOBAL_KEYS, GLOBAL_ONLY_KEYS, LIMIT_KEYS, POLICY_KEYS, ROUTE_KEYS,
                               SITE_ACME_KEYS, SITE_KEYS, TOP_KEYS, unknown)
from porch.config.model import (Config, Global, Limits, Listener, Route, Site, TlsFiles, TlsMode,
                                UpstreamTarget, UpstreamTLS)
from porch.config.streams import check_listener, read_streams
from porch.config.tls_keys import KEY_PEM, RELATIVE, SubProblems, pem_problem, quoted_path
from porch.config.values import Parser, Values, show
from porch.policies import registry
from porch.tls.names import is_ip, is_local
from porch.upstream import tls as tls_setup

BAD: Any = object()  # present but invalid, and already reported


def load_data(data: Values, source: str, base: str | None = None, origins: Origins | None = None) -> Config:
    """Check a config given as the values porch.toml would hold (what every front-end,
    nginx and Apache files included, produces); the same checks and messages as a
    porch.toml file.  `origins` maps key paths ("site[0].proxy", "porch.http_port")
    to where the front-end read them ("porch.toml:12", "nginx.conf:40: proxy_pass");
    a problem at a path with no origin of its own takes its nearest parent's.
    Relative file paths start at `base` (default: the current directory)."""
    origins = origins or {}
    config = _Reader(source, base or os.getcwd(), origins).config(data)
    return checks.checked(config, origins)


class _Reader:
    """Collects problems while reading one file; see the module docstring for the steps."""

    def __init__(self, source: str, base: str, origins: Origins) -> None:
        self.source = source
        self.base = base  # where relative file paths start
        self.origins = origins
        self.problems: list[tuple[str, str | None]] = []  # (key path: message, origin)
        self.pem_with_key: set[str] = set()  # cert files that hold their key too
        self.contexts_tried: dict[UpstreamTLS, str | None] = {}  # setting -> problem
        self.default_tls: TlsMode | None = None  # [porch] tls
        self.listen: list[tuple[Listener, ...] | None] = []  # each site's (); None: bad

    def problem(self, where: str, message: str) -> None:
        self.problems.append((f"{where}: {message}", locate(self.origins, where)))

    def config(self, data: Values) -> Config:
        self.read(data, TOP_KEYS, "", "a top-level key")
        porch, defaults = self.porch(data.get("porch", {}))
        drafts = [self.site_draft(i, table) for i, table in enumerate(self.tables(data, "site"))]
        if not drafts and not self.problems:
            self.problem(self.source, 'no sites (add a [[site]] with hosts = ["example.org"]'
                         ' and proxy = "http://127.0.0.1:8080")')
        self.listen = [self.site_listen(i, site, porch) for i, (site, _) in enumerate(drafts)]
        self.check_hosts([site for site, _ in drafts], porch)
        sites = tuple(self.site(i, *draft, defaults) for i, draft in enumerate(drafts))
        streams = read_streams(self.tables(data, "stream"), self.problem)  # config/streams.py
        check_listener(streams, sites, self.problem)
        if self.problems:
            found = sorted(self.problems, key=lambda p: _site_index(p[0]))
            raise ConfigError([line for line, _ in found], [origin for _, origin in found])
        return Config(porch=porch, sites=sites, source=self.source, streams=streams,
                      listeners=listeners.derive(porch, sites))

    def read(self, table: Values, keys: Mapping[str, Parser], where: str, scope: str) -> Values:
        """Parse each key of `table` with its parser; record unknown and bad keys."""
        values: Values = {}
        for key, value in table.items():
            path = f"{where}.{key}" if where else key
            if key not in keys:
                self.problem(path, unknown(key, keys, scope))
                continue
            try:
                values[key] = keys[key](value)
            except (SubProblems, upstreams.SubProblems) as e:
                for sub, message in e.problems:
                    self.problem(f"{path}.{sub}", message)
                values[key] = BAD
            except ValueError as e:
                self.problem(path, str(e))
                values[key] = BAD
        if isinstance(values.get("tls"), TlsFiles):
            values["tls"] = self.site_tls_files(f"{where}.tls", values["tls"])
        if isinstance(values.get("upstream_tls"), dict):
            values["upstream_tls"] = self.tls_files(f"{where}.upstream_tls", values["upstream_tls"])
        return values

    def site_tls_files(self, where: str, files: TlsFiles) -> TlsFiles | Any:
        """`tls = { cert, key }` with absolute paths (relative ones start at the config
        file's directory, as for upstream_tls); BAD (reported) when one is missing.
        Whether they load together is checked once the model is built (config/checks.py)."""
        out = []
        for kind, text in (("cert", files.cert), ("key", files.key), ("chain", files.chain)):
            if text is None:
                out.append(None)
                continue
            path = os.path.normpath(os.path.join(self.base, os.path.expanduser(text)))
            if not os.path.exists(path):
                whence = "" if os.path.isabs(text) else f" (as {path}: {RELATIVE})"
                self.problem(f"{where}.{kind}", f"{quoted_path(text)} does not exist{whence};"
                             " give the path of a PEM file")
            out.append(path)
        return TlsFiles(*out) if all(p is None or os.path.exists(p) for p in out) else BAD

    def tls_files(self, where: str, table: Values) -> Any:
        """`table` with its file paths made absolute, once each file is read and looks
        right; BAD (reported) if one does not.  A wrong path is a `porch check` error."""
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
                whence = "" if os.path.isabs(text) else f" (as {path}: {RELATIVE})"
                self.problem(f"{where}.{kind}", f"{quoted_path(text)} cannot be read: {e.strerror}{whence}")
                out = BAD
                continue
            problem = pem_problem(data, kind, text)
            if problem:
                self.problem(f"{where}.{kind}", problem)
                out = BAD
            elif out is not BAD:
                out[kind] = path
                if kind == "cert" and KEY_PEM.search(data):
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
            self.problem(path, f"{show(value)} is not a list of tables; write [[{header}]] sections")
            return []
        return value

    def porch(self, table: Any) -> tuple[Global, Values]:
        """The [porch] table: the Global model, and the limit values sites inherit."""
        if not isinstance(table, dict):
            self.problem("porch", "is not a table; write a single [porch] section")
            table = {}
        values = self.read(table, GLOBAL_KEYS, "porch", "a [porch] key")
        https = values.get("https_port")
        if https is not None and https == values.get("http_port", Global.http_port):
            self.problem("porch.https_port", f"{https} is also http_port; use two different ports")
        fields = _layered([values], GLOBAL_ONLY_KEYS)
        self.admin_token(values, fields)
        self.default_tls = values.get("tls") if values.get("tls") is not BAD else None
        return Global(**fields), _layered([values], {**LIMIT_KEYS, "upstream_tls": None, **POLICY_KEYS})

    def admin_token(self, values: Values, fields: Values) -> None:
        """admin_token_file made absolute (from the config file's directory), and a TCP
        admin address refused without a token (config/admin.py)."""
        if isinstance(fields.get("admin_token_file"), str):
            fields["admin_token_file"] = os.path.normpath(os.path.join(self.base, fields["admin_token_file"]))
        if fields.get("admin") is None or BAD in (values.get("admin_token"), values.get("admin_token_file")):
            return
        problem = admin.token_problem(fields["admin"], fields.get("admin_token"), fields.get("admin_token_file"))
        if problem:
            key, _, message = problem.partition(": ")
            self.problem(f"porch.{key}", message)

    def site_draft(self, i: int, table: Values) -> tuple[Values, list[Values]]:
        """A site's own values and its routes' values, read but not yet combined."""
        where = f"site[{i}]"
        site = self.read(table, SITE_KEYS, where, "a site key")
        tables = self.tables(table, "route", where)
        routes = [self.route_draft(f"{where}.route[{j}]", t) for j, t in enumerate(tables)]
        return site, routes

    def route_draft(self, where: str, table: Values) -> Values:
        """The route's values; its "path" is its label when it matches otherwise than by
        prefix (config/matchers.py)."""
        route = self.read(table, ROUTE_KEYS, where, "a route key")
        for key, message in matchers.draft_problems(table, route):
            self.problem(f"{where}.{key}" if key else where, message)
        return route

    def site_listen(self, i: int, site: Values, g: Global) -> tuple[Listener, ...] | None:
        """The listeners site `i` names in `listen` (() = every one); None if bad."""
        specs = site.get("listen")
        if specs is None:
            return ()
        if specs is BAD:
            return None
        found, problems = listeners.resolve(specs, g)
        for problem in problems:
            self.problem(f"site[{i}].listen", problem)
        return None if problems else found

    def check_hosts(self, sites: list[Values], g: Global) -> None:
        """Each host in one site only, and at most one site without hosts (the
        catch-all), on each listener: sites with disjoint `listen` may share names."""
        every = listeners.possible(g)
        owners: dict[tuple[str, Listener], int] = {}
        catch_all: dict[Listener, int] = {}
        for i, site in enumerate(sites):
            listen = self.listen[i]
            if listen is None:
                continue  # reported
            mine = listen or every
            other = next((catch_all[l] for l in mine if l in catch_all), None)
            if "hosts" not in site and other is not None:
                self.problem(f"site[{i}]", f"a second catch-all site (no hosts); site[{other}]"
                             " is one already (add hosts = [...] to one of them)" + _on(listen))
            elif "hosts" not in site:
                catch_all.update((l, i) for l in mine)
            hosts = site.get("hosts", ())
            for host in () if hosts is BAD else hosts:
                other = next((owners[host, l] for l in mine if (host, l) in owners), None)
                if other is not None:
                    self.problem(f"site[{i}].hosts", f"{show(host)} is also in site[{other}];"
                                 " a host may belong to one site only" + _on(listen))
                owners.update(((host, l), i) for l in mine if (host, l) not in owners)

    def site(self, i: int, site: Values, routes: list[Values], defaults: Values) -> Site:
        where = f"site[{i}]"
        self.check_paths(where, routes)
        built = [self.route(f"{where}.route[{j}]", site, r, defaults) for j, r in enumerate(routes)]
        if ("proxy" in site or "root" in site) and not any(route.get("path") == "/" for route in routes):
            built.append(self.route(where, site, {"path": "/"}, defaults))  # the site's own proxy
        elif not routes:
            self.problem(where, 'no proxy (add proxy = "http://host:port" to the site, root = "/var/www/..."'
                         ' for static files, or [[site.route]] tables)')
        if isinstance(site.get("upstream_tls"), dict) and not any(r and _has_https(r.upstreams) for r in built):
            self.problem(f"{where}.upstream_tls", _NO_HTTPS)
        values = _layered([site], SITE_KEYS)
        hosts = values.get("hosts", ())
        listen = self.listen[i] or ()
        tls = self.listen_tls(where, listen, values.get("tls"), site.get("tls") is BAD)
        if tls is None:
            tls = self.tls(where, hosts, values.get("tls"), site.get("tls") is BAD)
        if listen and all(l.kind == "tls" for l in listen) and tls == "off":
            self.problem(f"{where}.listen", 'names HTTPS listeners only, and this site has tls = "off";'
                         ' give it a certificate (tls = "auto", "internal" or { cert, key }), or'
                         ' write listen = "http"')
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
            policies=registry.merged([_layered([layer], POLICY_KEYS) for layer in (defaults, site)]),
            listen=listen,
            error_log=values.get("error_log"),
            **_layered([site], SITE_ACME_KEYS),
        )

    def listen_tls(self, where: str, listen: tuple[Listener, ...], tls: Any, bad: bool) -> TlsMode | None:
        """"off" for a site on plain listeners only (a certificate it would never use
        is refused when written); None: the site has a TLS listener, as usual."""
        if not listen or any(l.kind == "tls" for l in listen):
            return None
        if tls is not None and tls != "off" and not bad:
            self.problem(f"{where}.tls", f"{show(tls) if isinstance(tls, str) else '{...}'} is never used:"
                         ' this site listens on plain HTTP only (listen); remove tls, or add "https" to listen')
        return "off"

    def tls(self, where: str, hosts: tuple[str, ...], tls: Any, bad: bool) -> TlsMode | TlsFiles:
        """The site's TLS mode: as written, else [porch] tls, else from its hosts
        (public names "auto", local ones "internal", the catch-all "off")."""
        if bad:
            return "off"
        explicit = tls is not None
        tls = tls or self.default_tls
        if not hosts:  # the catch-all: no name to get a certificate for
            if explicit and tls in ("auto", "internal"):
                self.problem(f"{where}.tls", f"{show(tls)} needs host names, and this is the catch-all"
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
                self.problem(f"{where}.hosts", f"mixes public names ({show(public[0])}) and local ones"
                             f" ({show(local[0])}), which no public CA certifies; split them into two"
                             ' sites, or set tls = "internal", { cert = ..., key = ... } or "off"')
                return "off"
            tls = "auto" if public else "internal"
        if tls == "auto" and local:
            key = f"{where}.tls" if explicit else f"{where}.hosts"
            self.problem(key, f'{show(local[0])} cannot get an ACME certificate (tls = "auto"):'
                         ' public CAs only certify public DNS names; use tls = "internal"'
                         ' (Porch\'s local CA), { cert = ..., key = ... } or "off"')
        return tls

    def check_paths(self, where: str, routes: list[Values]) -> None:
        first: dict[str, int] = {}
        for j, route in enumerate(routes):
            path = route.get("path")
            if isinstance(path, str) and path in first:
                self.problem(f"{where}.route[{j}].path", f"{show(path)} is also"
                             f" {where}.route[{first[path]}]; a path may appear once per site")
            elif isinstance(path, str):
                first[path] = j

    def route(self, where: str, site: Values, route: Values, defaults: Values) -> Route | None:
        """The route's values over the site's; None (reported or bad) if incomplete."""
        policies = registry.merged([_layered([layer], POLICY_KEYS) for layer in (defaults, site, route)])
        if "proxy" not in route and "proxy" not in site:
            if any(layer.get("root") is BAD for layer in (defaults, site, route)):
                return None  # its root is bad, and already reported
            if not self.static_only(where, dict(policies), route):
                return None
        values = _layered([site, route], ROUTE_KEYS)
        if "path" not in values or ("proxy" not in values and "root" not in dict(policies)):
            return None  # bad values, already reported
        strip = matchers.strip_problem(site, route)
        if strip:
            self.problem(where, strip)
        targets = values.get("proxy", ())
        https = _has_https(targets)
        tls = self.upstream_tls(where, [defaults, site, route], https)
        built = Route(
            path=values["path"],
            matcher=matchers.matcher(route),
            priority_prefix=route.get("priority") == "prefix",
            upstreams=targets,
            # a matcher route has no prefix to strip (refused above when inherited as true)
            strip_prefix=values.get("strip_prefix", False) is True and matchers.matcher(route) is None,
            upstream_host=values.get("upstream_host"),
            allow_trace=values.get("allow_trace", False),
            upstream_proxy_protocol=values.get("upstream_proxy_protocol", 0),
            access_log=values.get("access_log"),
            access_log_format=values.get("access_log_format"),
            limits=Limits(**_layered([defaults, site, route], LIMIT_KEYS)),
            # only https:// upstreams use it: a plain route has the default, whatever [porch] says
            upstream_tls=tls if https else UpstreamTLS(),
            pool=upstreams.pool(values),
            key_path=where,
            policies=policies,
        )
        if isinstance(route.get("upstream_tls"), dict) and not _has_https(built.upstreams):
            self.problem(f"{where}.upstream_tls", _NO_HTTPS)
        return built

    def static_only(self, where: str, policies: Values, route: Values) -> bool:
        """A route without proxy: valid when `root` answers every request (static files
        only); reported otherwise."""
        root = policies.get("root")
        if root is None:
            self.problem(where, 'no proxy (add proxy = "http://host:port" to the route or the site,'
                         ' or root = "/var/www/..." for static files)')
            return False
        if root.try_files:
            key = f"{where}.root" if "root" in route else where
            self.problem(key, "try_files = true falls back to the upstream, and there is no proxy here;"
                         ' add proxy = "http://host:port", or remove try_files')
            return False
        return True

    def upstream_tls(self, where: str, layers: list[Values], https: bool) -> UpstreamTLS:
        """The route's `upstream_tls`, key by key (route over site over [porch]).  For a
        route with https:// upstreams, its files are tried together as the connection
        will use them (once per distinct setting, so a problem is reported once)."""
        merged: Values = {}
        for layer in layers:
            table = layer.get("upstream_tls")
            if table is BAD:
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
        merged.update((k, v) for k, v in layer.items() if k in keys and v is not BAD)
    return merged


def _on(listen: tuple[Listener, ...]) -> str:
    """The end of a clash message for a site with `listen`: where they clash."""
    return " per listener, and their listen lists overlap" if listen else ""


def _site_index(problem: str) -> int:
    """Sort key putting problems in file order: top level and [porch], then by site."""
    match = re.match(r"site\[(\d+)\]", problem)
    return int(match.group(1)) if match else -1


