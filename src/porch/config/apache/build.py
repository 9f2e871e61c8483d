"""Apache directives -> the values a porch.toml holds, with the origin of each key.

<VirtualHost>s that name the same ServerName and ServerAliases are one site: the
SSLEngine one gives the routes, a plain one that redirects to https:// (certbot's
`RewriteCond %{SERVER_NAME} =name` + `RewriteRule ^ https://%{SERVER_NAME}%{REQUEST_URI}
[END,NE,R=permanent]`, or `Redirect permanent / https://name/`) is Porch's
redirect_http, and a plain one alone is a site with tls = "off".  Each ProxyPass (in
the vhost or a <Location>) is a route; a site with one for / is written with its keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from porch.config.apache.parse import Directive, Parsed
from porch.config.apache.routes import Problem, Proxy, RouteBuilder, Scope, on
from porch.config.frontend import BuildBase, Result

_HTTPS = re.compile(r"https://(%\{(SERVER_NAME|HTTP_HOST)\}|[A-Za-z0-9.-]+)(%\{REQUEST_URI\}|/\$1|/)?")
# Directives whose work Porch does by itself or that concern what Porch does not do.
NO_EFFECT = {
    **dict.fromkeys(("serveradmin", "serversignature", "servertokens", "options", "allowoverride",
                     "directoryindex", "adddefaultcharset", "hostnamelookups", "accessfilename",
                     "loglevel"), "Porch serves no files and writes its own pages"),
    **dict.fromkeys(("loadmodule", "listen", "serverroot", "user", "group", "pidfile", "mutex",
                     "defaultruntimedir", "keepalive", "maxkeepaliverequests", "includeoptional",
                     "startservers", "maxrequestworkers"), "Porch's ports come from the VirtualHosts"
                    " and its processes from [porch] workers"),
    **dict.fromkeys(("sslhonorcipherorder", "sslsessiontickets", "sslcompression", "ssloptions",
                     "sslsessioncache", "sslsessioncachetimeout", "sslopensslconfcmd", "sslrandomseed",
                     "sslproxycheckpeername", "sslproxycheckpeercn", "sslproxycheckpeerexpire"),
                    "Porch's TLS settings are fixed and safe; [porch] tls_protocols and tls_ciphers"
                    " are the ones to tune"),
    **dict.fromkeys(("sslusestapling", "sslstaplingcache"), "Let's Encrypt has ended OCSP"),
    "proxyrequests": "Porch is never a forward proxy",
    "proxyvia": "Porch sends no Via field",
    "proxyaddheaders": "Porch sends X-Forwarded-For, -Host, -Proto itself",
}
# mod_log_config's formats that are Porch's access_log_format (Debian's apache2.conf
# writes %O, httpd's manual %b: the bytes sent either way, as Porch counts them).
_LOG_FORMATS = {
    '%h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"': "combined",
    '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"': "combined",
    '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"': "vhost_combined",
}
# Read by routes.py where a ProxyPass applies; the vhost's first, a <Location>'s over them.
SCOPED = ("proxypreservehost", "requestheader", "header", "limitrequestbody", "proxytimeout", "timeout",
          "authtype", "authname", "authuserfile", "authbasicprovider", "require", "sslproxyengine",
          "sslproxyverify", "sslproxycacertificatefile", "proxypassreverse",
          "requireall", "requireany", "order", "allow", "deny")
# Directory context only in httpd (<Location>, <Directory>): it refuses them elsewhere.
LOCATION_ONLY = ("require", "requireall", "requireany", "order", "allow", "deny")


@dataclass
class VHost:
    block: Directive
    port: int
    address: str | None
    scope: Scope
    names: tuple[str, ...] = ()
    ssl: bool = False
    proxies: list[Proxy] = field(default_factory=list)
    excluded: list[Directive] = field(default_factory=list)
    redirect: Directive | None = None
    rewrite: list[Directive] = field(default_factory=list)


class Builder(BuildBase):
    def __init__(self, parsed: Parsed, known: frozenset[str]) -> None:
        self.parsed = parsed
        self.known = known
        self.problems = list(parsed.problems)
        self.warnings = list(parsed.warnings)
        self.porch: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.top = Scope()
        self.log_formats: dict[str, Directive] = {}  # LogFormat FORMAT NICKNAME, by nickname
        self.log_paths: list[str] = []  # every VirtualHost's CustomLog file

    def needs(self, key: str, d: Directive, values: dict, value: Any, origins: dict) -> bool:
        if key in self.known:
            values[key] = value
            origins[key] = d
            return True
        self.problems.append(f"{d.origin}: needs porch.toml's {key} key, which this Porch does not have"
                             " yet (remove it to load the file without it)")
        return False

    def unknown(self, d: Directive) -> None:
        kind = f"<{d.name}>" if d.block is not None else d.name
        self.problems.append(f"{d.file}:{d.line}: {kind}: is not supported by Porch's Apache reader"
                             " (docs/apache.md lists what is); write the porch.toml equivalent")

    # --- walking ---------------------------------------------------------------------

    def run(self) -> Result:
        vhosts: list[VHost] = []
        self.walk(self.parsed.directives, vhosts)
        if not vhosts and not self.problems:
            self.problems.append(f"{self.parsed.root}: the file has no <VirtualHost>; Porch needs one"
                                 " with a ProxyPass")
        return self.result(self.sites(vhosts))

    def walk(self, items: tuple[Directive, ...], vhosts: list[VHost]) -> None:
        for d in items:
            if d.key == "ifmodule" and d.block is not None:
                if not d.args[:1] or not d.args[0].startswith("!"):
                    self.walk(d.block, vhosts)  # Porch has what mod_ssl, mod_proxy... provide
            elif d.key == "virtualhost" and d.block is not None:
                vhost = self.vhost(d)
                if vhost is not None:
                    vhosts.append(vhost)
            elif d.key == "logformat":
                self.log_format(d)
            elif d.key in NO_EFFECT:
                self.warn(d, f"has no effect here ({NO_EFFECT[d.key]})")
            elif d.key in LOCATION_ONLY:
                self.location_only(d)
            elif d.key in SCOPED:
                self.top.items.append(d)
            elif d.key in ("sslprotocol", "sslciphersuite"):
                self.tls_global(d)
            elif d.key in ("errorlog", "customlog", "servername", "documentroot"):
                self.warn(d, "outside a VirtualHost: ignored (Porch's logs are [porch] access_log and"
                          " error_log)" if "log" in d.key else "outside a VirtualHost: ignored")
            else:
                self.unknown(d)

    def vhost(self, d: Directive) -> VHost | None:
        address, port = None, 80
        for arg in d.args[:1]:
            host, sep, num = arg.rpartition(":")
            if not sep or not num.isdigit():
                self.problems.append(f"{d.origin}: {arg}: write the address with its port (*:80, *:443)")
                return None
            port = int(num)
            address = None if host in ("*", "_default_") else host.strip("[]")
        if len(d.args) > 1:
            self.warn(d, f"{' '.join(d.args[1:])}: Porch listens on one address list for all sites;"
                      f" read as {d.args[0]}")
        vhost = VHost(d, port, address, Scope(outer=self.top))
        for item in d.block or ():
            self.vhost_item(vhost, item)
        engine = vhost.scope.one("sslengine")
        cert = vhost.scope.one("sslcertificatefile")
        # certbot's le-ssl file has no SSLEngine: options-ssl-apache.conf (maybe missing) has it
        vhost.ssl = on(engine) if engine is not None else cert is not None
        if vhost.rewrite:
            self.rewrite(vhost)
        return vhost

    def vhost_item(self, vhost: VHost, item: Directive) -> None:
        key = item.key
        try:
            if key == "servername" and item.args:
                vhost.names = (item.args[0].split("://")[-1].split(":")[0],) + vhost.names
            elif key == "serveralias":
                vhost.names += item.args
            elif key == "ifmodule" and item.block is not None:
                if not item.args[:1] or not item.args[0].startswith("!"):
                    for inner in item.block:
                        self.vhost_item(vhost, inner)
            elif key == "proxypass":
                self.proxypass(vhost, item, None, vhost.scope)
            elif key == "location" and item.block is not None:
                self.location(vhost, item)
            elif key in ("sslengine", "sslcertificatefile", "sslcertificatekeyfile", "sslcertificatechainfile"):
                vhost.scope.items.append(item)
            elif key in ("sslprotocol", "sslciphersuite"):
                self.tls_global(item)
            elif key in ("rewriteengine", "rewritecond", "rewriterule"):
                vhost.rewrite.append(item)
            elif key in ("redirect", "redirectpermanent"):
                self.redirect(vhost, item)
            elif key == "documentroot":
                vhost.scope.items.append(item)
            elif key in ("errorlog", "customlog"):
                vhost.scope.items.append(item)  # the site's own logs: see logs()
            elif key == "logformat":
                self.log_format(item)
            elif key in ("directory", "proxy") and item.block is not None:
                self.warn(item, f"<{item.name}> has no effect here (Porch serves no files; its proxy"
                          " is open only to the ProxyPass paths)")
            elif key in NO_EFFECT:
                self.warn(item, f"has no effect here ({NO_EFFECT[key]})")
            elif key in LOCATION_ONLY:
                self.location_only(item)
            elif key in SCOPED:
                vhost.scope.items.append(item)
            else:
                self.unknown(item)
        except Problem as e:
            self.problems.append(str(e))

    def location_only(self, d: Directive) -> None:
        kind = f"<{d.name}>" if d.block is not None else d.name
        self.problems.append(f"{d.file}:{d.line}: {kind}: httpd refuses it outside <Location> and"
                             f" <Directory> (\"{d.name} not allowed here\"); put it in the <Location>"
                             " of the ProxyPass it guards")

    def proxypass(self, vhost: VHost, d: Directive, path: str | None, scope: Scope) -> None:
        args = list(d.args)
        if path is None:
            if len(args) < 2:
                raise Problem(f"{d.origin}: takes a path and a URL: ProxyPass /app/ http://127.0.0.1:8080/")
            path = args.pop(0)
        if not args:
            raise Problem(f"{d.origin}: takes a URL: ProxyPass http://127.0.0.1:8080/")
        if args[0] == "!":
            vhost.excluded.append(d)
            return
        if not path.startswith("/"):
            raise Problem(f"{d.origin}: {path}: write a path starting with / (regex forms,"
                          " ProxyPassMatch, are not supported)")
        vhost.proxies.append(Proxy(path, args[0], tuple(args[1:]), d, scope))

    def location(self, vhost: VHost, d: Directive) -> None:
        if len(d.args) != 1 or d.args[0].startswith("~"):
            raise Problem(f"{d.origin}: only <Location /path> is supported (not regexes)")
        scope = Scope(outer=vhost.scope)
        proxies = []
        for item in d.block or ():
            if item.key == "proxypass":
                proxies.append(item)
            elif item.key in SCOPED:
                scope.items.append(item)
            elif item.key in NO_EFFECT:
                self.warn(item, f"has no effect here ({NO_EFFECT[item.key]})")
            else:
                self.unknown(item)
        for item in proxies:
            self.proxypass(vhost, item, d.args[0], scope)
        if not proxies:
            self.problems.append(f"{d.origin}: <Location {d.args[0]}> has no ProxyPass; Porch applies"
                                 " settings to routes: put a ProxyPass in it")

    # --- redirects -------------------------------------------------------------------

    def rewrite(self, vhost: VHost) -> None:
        """certbot's redirect; any other mod_rewrite use is not supported."""
        engine = [d for d in vhost.rewrite if d.key == "rewriteengine"]
        rules = [d for d in vhost.rewrite if d.key == "rewriterule"]
        conds = [d for d in vhost.rewrite if d.key == "rewritecond"]
        if not engine or not on(engine[-1]):
            if rules:
                self.warn(rules[0], "RewriteEngine is not on, so httpd ignores this rule; so does Porch")
            return
        for c in conds:
            if len(c.args) < 2 or c.args[0] not in ("%{SERVER_NAME}", "%{HTTP_HOST}") \
                    or not c.args[1].startswith("="):
                self.problems.append(f"{c.origin}: only certbot's RewriteCond %{{SERVER_NAME}} =name"
                                     " is supported")
        for r in rules:
            if len(r.args) >= 2 and r.args[0] in ("^", "^/?(.*)$", "^(.*)$") and _HTTPS.fullmatch(r.args[1]) \
                    and any(f in (r.args[2] if len(r.args) > 2 else "") for f in ("R=301", "R=permanent",
                                                                                   "R=308", "R=302", "R]", "R,")):
                vhost.redirect = r
            else:
                self.problems.append(f"{r.origin}: only the redirect to https:// (certbot's RewriteRule ^"
                                     " https://%{SERVER_NAME}%{REQUEST_URI} [END,NE,R=permanent]) is"
                                     " supported; Porch redirects HTTP to HTTPS by itself for sites with TLS")

    def redirect(self, vhost: VHost, d: Directive) -> None:
        args = list(d.args)
        if d.key == "redirect" and args and not args[0].startswith("/"):
            args = args[1:]  # the status: permanent, 301, ...
        if len(args) == 2 and args[0] == "/" and _HTTPS.fullmatch(args[1]):
            vhost.redirect = d
            return
        raise Problem(f"{d.origin}: only Redirect / https://name/ is supported; Porch redirects HTTP"
                      " to HTTPS by itself for sites with TLS")

    # --- sites -----------------------------------------------------------------------

    def sites(self, vhosts: list[VHost]) -> list[dict[str, Any]]:
        self.log_paths = [c.args[0] for v in vhosts if (c := v.scope.one("customlog")) is not None and c.args]
        self.ports(vhosts)
        groups: dict[tuple[str, ...], list[VHost]] = {}
        for vhost in vhosts:
            groups.setdefault(vhost.names, []).append(vhost)
        return self.grouped_sites(groups)

    def ports(self, vhosts: list[VHost]) -> None:
        for ssl, key in ((False, "http_port"), (True, "https_port")):
            seen = [v for v in vhosts if v.ssl == ssl]
            ports = sorted({v.port for v in seen})
            if len(ports) > 1:
                other = next(v for v in seen if v.port != seen[0].port)
                self.problems.append(f"{other.block.origin}: port {other.port}: Porch serves every site"
                                     f" on one {'HTTPS' if ssl else 'HTTP'} port ({seen[0].port}); use one")
            if seen and seen[0].port != (443 if ssl else 80):
                self.porch[key] = seen[0].port
                self.origins[f"porch.{key}"] = seen[0].block.origin
        if vhosts and all(v.address for v in vhosts):
            self.porch["bind"] = sorted({v.address for v in vhosts if v.address})
        if any(v.ssl for v in vhosts):
            self.porch["http2"] = False  # httpd offers h2 only with `Protocols h2 http/1.1`

    def site(self, i: int, names: tuple[str, ...], group: list[VHost]) -> dict[str, Any] | None:
        where = f"site[{i}]"
        main, secure, plain = self.split(group, "VirtualHost")
        for v in plain:
            target = _HTTPS.fullmatch(v.redirect.args[1 if v.redirect.key == "rewriterule" else -1]) \
                if v.redirect is not None else None
            if target and not target.group(1).startswith("%") and target.group(1) not in names:
                self.problems.append(f"{v.redirect.origin}: redirects to {target.group(1)}, another host;"
                                     " Porch's HTTPS redirect keeps the client's host: give that host"
                                     " its own site (or list it in ServerAlias)")
                return None
        site: dict[str, Any] = {}
        if names:
            site["hosts"] = list(names)
            named = next((x for x in main.block.block or () if x.key == "servername"), main.block)
            self.origins[f"{where}.hosts"] = named.origin
        if secure:
            self.tls(site, where, main)
            if plain and plain[0].proxies and plain[0].redirect is None:
                self.warn(plain[0].block, "Porch answers plain HTTP for these names with a redirect to"
                          " https:// (ACME challenges go to the upstream), not with this VirtualHost's"
                          " ProxyPass; porch.toml: redirect_http = false to serve both alike")
                site["acme_challenge"] = "upstream"
        else:
            site["tls"] = "off"
            if main.redirect is not None:
                self.problems.append(f"{main.redirect.origin}: redirects to https://, but no VirtualHost"
                                     " with SSLEngine on serves these names (certbot writes it in a second file,"
                                 " NAME-le-ssl.conf: load a file that Includes both, or apache2.conf)")
                return None
        for d in main.excluded:
            self.problems.append(f"{d.origin}: ! (not proxied: httpd serves it from DocumentRoot) is"
                                 " not supported; Porch serves no files: proxy the path to a file server")
        root = main.scope.one("documentroot")
        if root is not None:
            self.warn(root, "has no effect here: Porch serves no files"
                      + (" (ProxyPass / sends every request upstream)" if any(p.path == "/" for p in main.proxies)
                         else ""))
        self.logs(site, where, main)
        routes = self.routes(main)
        self.place_routes(site, where, routes)
        if not routes and main.redirect is None and not self.problems:
            self.problems.append(f"{main.block.origin}: has no ProxyPass; httpd would serve files from"
                                 " its DocumentRoot, Porch needs an upstream")
            return None
        self.origins.setdefault(where, main.block.origin)
        return site

    def logs(self, site: dict[str, Any], where: str, vhost: VHost) -> None:
        """CustomLog and ErrorLog of the VirtualHost: the site's access_log and error_log."""
        custom, error = vhost.scope.one("customlog"), vhost.scope.one("errorlog")
        if custom is not None and custom.args:
            site["access_log"] = custom.args[0]
            self.origins[f"{where}.access_log"] = custom.origin
            fmt = self.access_format(custom)
            # Debian's other_vhosts_access.log; or a combined file that several VirtualHosts
            # write, which Porch would give vhost_combined lines (httpd writes plain ones)
            if fmt == "vhost_combined" or self.log_paths.count(custom.args[0]) > 1:
                site["access_log_format"] = fmt
                self.origins[f"{where}.access_log_format"] = custom.origin
            if custom.args[0].startswith("|"):
                self.problems.append(f"{custom.origin}: piped logs are not supported; write a file path")
        if error is not None and error.args:
            site["error_log"] = error.args[0]
            self.origins[f"{where}.error_log"] = error.origin

    def log_format(self, d: Directive) -> None:
        """LogFormat FORMAT [NICKNAME]: read where a CustomLog names it."""
        if len(d.args) == 2:
            self.log_formats[d.args[1]] = d

    def access_format(self, custom: Directive) -> str:
        """The access_log_format a CustomLog's format (a nickname or the text) means:
        combined or vhost_combined when it is one of theirs; else combined, warned."""
        if len(custom.args) < 2:
            return "combined"
        name = custom.args[1]
        defined = self.log_formats.get(name)
        text = defined.args[0] if defined is not None else name
        fmt = _LOG_FORMATS.get(" ".join(text.split()))
        if fmt is None and defined is None and name in ("combined", "vhost_combined"):
            fmt = name  # Debian's apache2.conf defines them (not read here)
        if fmt is not None:
            return fmt
        where = f" (LogFormat at {defined.file}:{defined.line})" if defined is not None else ""
        self.warn(custom, f"{name}{where}: Porch writes its own formats only; this log gets \"combined\""
                  ' lines (access_log_format: "combined", "vhost_combined" or "json")')
        return "combined"

    def routes(self, vhost: VHost) -> list[tuple[dict, dict]]:
        out = []
        for n, proxy in enumerate(vhost.proxies):
            shadow = next((p for p in vhost.proxies[:n] if proxy.path.startswith(p.path.rstrip("/") + "/")
                           or p.path == "/"), None)
            if shadow is not None and shadow.directive.block is None and proxy.directive.file == shadow.directive.file \
                    and proxy.scope is vhost.scope:
                self.warn(proxy.directive, f"httpd uses the first ProxyPass that matches, so {shadow.path}"
                          f" (line {shadow.directive.line}) takes {proxy.path} before it; Porch picks the"
                          " longest path, as httpd's manual says to order them: put this line first")
            route = RouteBuilder(self, proxy)
            if route.build():
                out.append((route.values, route.origins))
        return out

    def tls(self, site: dict[str, Any], where: str, vhost: VHost) -> None:
        cert, key = vhost.scope.one("sslcertificatefile"), vhost.scope.one("sslcertificatekeyfile")
        chain = vhost.scope.one("sslcertificatechainfile")
        if cert is None or not cert.args:
            self.warn(vhost.block, "has SSLEngine on but no SSLCertificateFile (httpd refuses to start);"
                      ' Porch gets a certificate itself (tls = "auto")')
            return
        cert_path = cert.args[0]
        key_path = key.args[0] if key is not None and key.args else cert_path
        if chain is not None:
            self.warn(chain, "Porch sends the chain from the certificate file: point SSLCertificateFile"
                      " (porch.toml tls.cert) at fullchain.pem and drop this line")
        self.tls_files(site, where, cert, cert_path, key_path)

    def tls_global(self, d: Directive) -> None:
        if d.key == "sslciphersuite":
            if "porch.tls_ciphers" not in self.origins and d.args:
                if len(d.args) == 2 and d.args[0].upper() in ("SSL", "TLSV1.3"):
                    if d.args[0].upper() == "TLSV1.3":
                        self.warn(d, "TLS 1.3's ciphers are not set here (Porch uses OpenSSL's)")
                        return
                    self.set_global("tls_ciphers", d.args[1], d)
                else:
                    self.set_global("tls_ciphers", d.args[-1], d)
            return
        if "porch.tls_protocols" in self.origins:
            return
        versions: set[str] = set()
        every = {"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
        for arg in d.args:
            name = arg.lstrip("+-")
            group = every if name.lower() == "all" else {name}
            if arg.startswith("-"):
                versions -= group
            else:
                versions |= group
        old = sorted(v for v in versions if v not in ("TLSv1.2", "TLSv1.3"))
        if old:
            self.warn(d, f"{', '.join(old)} dropped: Porch refuses TLS below 1.2 (RFC 8996)")
        kept = sorted(v.replace("TLSv", "") for v in versions if v in ("TLSv1.2", "TLSv1.3"))
        if kept:
            self.set_global("tls_protocols", kept, d)
