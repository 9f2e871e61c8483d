"""nginx directives whose porch.toml keys are the policies issue's (13):

    auth_basic "realm"; auth_basic_user_file F;  -> basic_auth = { htpasswd, realm, user_header }
    auth_request /verify; auth_request_set ...   -> forward_auth = { url, copy_headers } (the url from location /verify)
    limit_req zone=z burst=20 nodelay;           -> rate_limit = { rate, burst, nodelay }
    allow 10.0.0.0/8; deny all;                  -> allow = [...] (deny all: only those)
    expires 7d;                                  -> expires = "7d"
    gzip on; gzip_types ...; gzip_min_length N;  -> compress = { algorithms = ["gzip"], ... }

Each goes through `Builder.needs`, which writes the key when this build has it and
otherwise says the directive cannot be honoured yet.
"""

from __future__ import annotations

from typing import Any

from porch.config.nginx import directives as table
from porch.config.nginx.locations import auth_request_vars
from porch.config.nginx.parse import Directive
from porch.config.nginx.variables import Problem, size


def route_policies(ctx: Any, route: Any) -> None:
    for step in (_basic_auth, _limit_req, _access, _expires, _compress, _static, _auth_request):
        try:
            step(ctx, route)
        except Problem as e:
            ctx.problems.append(str(e))


def _basic_auth(ctx: Any, route: Any) -> None:
    realm = route.scope.one("auth_basic")
    if realm is None or realm.args == ("off",):
        _identity_trap(ctx, route)
        return
    users = route.scope.one("auth_basic_user_file")
    if users is None:
        raise Problem(f"{realm.origin}: has no auth_basic_user_file; add the htpasswd file's path")
    value: dict[str, Any] = {"htpasswd": users.args[0], "realm": realm.args[0] if realm.args else ""}
    for d in route.scope.get("proxy_set_header"):
        if len(d.args) == 2 and d.args[1] == "$remote_user" and d.args[0].lower() in table.IDENTITY:
            value["user_header"] = d.args[0]
    ctx.needs("basic_auth", realm, route.values, value, route.origins)


def _identity_trap(ctx: Any, route: Any) -> None:
    """nginx passes a client's X-Remote-User when the config does not set it."""
    for d in route.scope.get("proxy_set_header"):
        if len(d.args) == 2 and d.args[0].lower() in table.IDENTITY and d.args[1] == "$remote_user":
            ctx.warn(d, "without auth_basic, $remote_user is empty and nginx sends no field; a client's"
                     f" own {d.args[0]} is dropped by Porch on every route (never trusted)")


def _limit_req(ctx: Any, route: Any) -> None:
    d = route.scope.one("limit_req")
    if d is None:
        return
    opts = dict(a.partition("=")[::2] for a in d.args)
    zone = ctx.zones.get(opts.get("zone", ""))
    if zone is None:
        raise Problem(f"{d.origin}: zone {opts.get('zone', '')!r} has no limit_req_zone; define it in http")
    zopts = dict(a.partition("=")[::2] for a in zone.args[1:])
    if zone.args[:1] not in (("$binary_remote_addr",), ("$remote_addr",)):
        raise Problem(f"{zone.origin}: Porch limits per client address ($binary_remote_addr) only")
    value: dict[str, Any] = {"rate": zopts.get("rate", "")}
    if "burst" in opts:
        value["burst"] = int(opts["burst"]) if opts["burst"].isdigit() else opts["burst"]
    if "nodelay" in d.args:
        value["nodelay"] = True
    # nginx rejects with 503 unless limit_req_status says otherwise (Porch's own default is 429)
    status = route.scope.one("limit_req_status")
    value["status"] = int(status.args[0]) if status is not None and status.args[:1] and status.args[0].isdigit() else 503
    ctx.needs("rate_limit", d, route.values, value, route.origins)


def _access(ctx: Any, route: Any) -> None:
    rules = [(d.name, d.args[0] if d.args else "", d) for name in ("allow", "deny")
             for d in route.scope.get(name)]
    if not rules:
        return
    rules.sort(key=lambda r: (r[2].file, r[2].line))  # nginx: first match in file order
    allows = [arg for name, arg, _ in rules if name == "allow" and arg != "all"]
    denies = [arg for name, arg, _ in rules if name == "deny" and arg != "all"]
    first = rules[0][2]
    if rules[-1][0] == "deny" and rules[-1][1] == "all" and not denies:
        ctx.needs("allow", first, route.values, allows, route.origins)
    elif not allows:
        ctx.needs("deny", first, route.values, denies, route.origins)
    else:
        raise Problem(f"{first.origin}: mixes allow and deny; Porch reads allow ... + deny all,"
                      " or deny lines alone")


def _expires(ctx: Any, route: Any) -> None:
    d = route.scope.one("expires")
    if d is not None:
        ctx.needs("expires", d, route.values, d.args[-1] if d.args else "", route.origins)


def _compress(ctx: Any, route: Any) -> None:
    d = route.scope.one("gzip")
    if d is None or d.args != ("on",):
        return
    value: dict[str, Any] = {"algorithms": ["gzip"]}
    types = route.scope.one("gzip_types")
    if types is not None:
        value["types"] = list(types.args)
    length = route.scope.one("gzip_min_length")
    if length is not None:
        value["min_length"] = int(size(length.args[0], ctx.warnings, length.origin).rstrip("KMG") or 0)
    level = route.scope.one("gzip_comp_level")
    if level is not None and level.args[0].isdigit():
        value["level"] = int(level.args[0])
    dup = [x for x in route.scope.level_of("gzip").own["gzip"]] if route.scope.level_of("gzip") else []
    if len(dup) > 1:
        raise Problem(f"{dup[1].origin}: written twice at this level; nginx refuses the file"
                      ' ("directive is duplicate"): remove one (Debian\'s nginx.conf has gzip on already)')
    ctx.needs("compress", d, route.values, value, route.origins)


# try_files forms that mean what Porch's root does without try_files: the file, a
# directory's index, else 404
_PLAIN_TRY_FILES = (("$uri", "$uri/", "=404"),)


def _static(ctx: Any, route: Any) -> None:
    """root (with index) in a location without proxy_pass: root = { path, index }.  In a
    proxied location nginx's content handler is proxy_pass, so its root serves nothing
    and is left out; try_files there falls back to a named location, which Porch has no
    form for (its try_files = true falls back to the route's own proxy)."""
    d = route.scope.one("root")
    files = route.scope.one("try_files")
    if "proxy" in route.values:
        if files is not None:
            raise Problem(f"{files.origin}: try_files in a location with proxy_pass; write it in"
                          " porch.toml as root = { path = ..., try_files = true } on a route with"
                          " proxy (the file, else that route's upstream)")
        return
    if d is None:
        return
    if files is not None and files.args not in _PLAIN_TRY_FILES:
        raise Problem(f"{files.origin}: try_files {' '.join(files.args)}: Porch reads only"
                      " try_files $uri $uri/ =404 in a location without proxy_pass (what its root"
                      " does anyway); remove it, or put proxy_pass in the location")
    value: Any = d.args[0] if d.args else ""
    index = route.scope.one("index")
    if index is not None:
        value = {"path": value, "index": list(index.args)}
    ctx.needs("root", d, route.values, value, route.origins)


def _auth_request(ctx: Any, route: Any) -> None:
    """auth_request /authelia; with the location it names (`internal`, proxy_pass to
    the service), as Authelia's, Authentik's and oauth2-proxy's nginx snippets write
    it -> forward_auth = { url, copy_headers }.  `auth_request_set $user
    $upstream_http_remote_user;` with `proxy_set_header Remote-User $user;` is a copied
    field (Porch copies it under the service's name, so the two names must agree)."""
    d: Directive | None = route.scope.one("auth_request")
    if d is None or d.args == ("off",):
        return
    uri = d.args[0] if d.args else ""
    url = _auth_url(ctx, d, uri)
    value: dict[str, Any] = {"url": url}
    fields = auth_request_vars(route.scope)
    copied = []
    for h in route.scope.get("proxy_set_header"):
        if len(h.args) == 2 and h.args[1] in fields:
            if h.args[0].lower() != fields[h.args[1]]:
                raise Problem(f"{h.origin}: {h.args[0]} {h.args[1]}: Porch sets the auth service's"
                              f" {fields[h.args[1]]} field upstream under its own name; name the field"
                              f" {fields[h.args[1]]} here, or have the service answer {h.args[0]}")
            copied.append(h.args[0])
    if copied:
        value["copy_headers"] = copied
    ctx.needs("forward_auth", d, route.values, value, route.origins)


def _auth_url(ctx: Any, d: Directive, uri: str) -> str:
    """The URL nginx's subrequest to `uri` goes to: the proxy_pass of the location
    that takes it, by nginx's rule (with a URI part, the location's match replaced)."""
    loc, prefix = _location_for(ctx.locations, uri)
    if loc is None:
        raise Problem(f"{d.origin}: {uri}: no location of this server takes it; add"
                      " location = " + uri + " { internal; proxy_pass http://AUTH-SERVICE/...; }")
    proxy = next((x for x in loc.block or () if x.name == "proxy_pass"), None)
    if proxy is None or not proxy.args or "$" in proxy.args[0]:
        raise Problem(f"{loc.origin}: the location auth_request {uri} names needs a plain"
                      " proxy_pass http://HOST:PORT/path; to the auth service")
    target = proxy.args[0]
    scheme, _, rest = target.partition("://")
    host, slash, path = rest.partition("/")
    if host in ctx.upstreams:  # an upstream block: its first server
        first = ctx.upstreams[host].targets[0]
        host = (first.get("url") if isinstance(first, dict) else first).split("://")[-1]
    if not slash:  # no URI part: the subrequest's own URI
        return f"{scheme}://{host}{uri}"
    return f"{scheme}://{host}/{path}{uri[len(prefix):]}"


def _location_for(locations: list[Directive], uri: str) -> tuple[Directive | None, str]:
    """nginx's choice for a plain URI among exact and prefix locations."""
    best: tuple[Directive | None, str] = (None, "")
    for loc in locations:
        args = loc.args
        if len(args) == 2 and args[0] == "=" and args[1] == uri:
            return loc, uri
        path = args[-1] if len(args) == 1 or args[0] == "^~" else None
        if path is not None and uri.startswith(path) and len(path) > len(best[1]):
            best = (loc, path)
    return best
