"""What each admin endpoint does (server/admin/api.py lists them and handles auth)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tempfile
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from porch.config.errors import ConfigError, invalid_config_message
from porch.server.admin import collect
from porch.server.admin.api import Response, as_json, text

if TYPE_CHECKING:
    from porch.server.admin.api import Request
    from porch.server.supervisor import Supervisor

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}
TOML_TYPES = ("application/toml", "text/toml", "text/x-toml")
NGINX_TYPES = ("text/x-nginx-conf", "text/x-nginx")
APACHE_TYPES = ("text/x-apache-conf", "text/x-apache")
SNIFFED_TYPES = ("", "text/plain", "application/octet-stream")  # the type found from the content
LOAD_SOURCE = "POST /load"  # what the config of a POST /load is called in messages and the dashboard
CERTS_EVERY = 10.0  # seconds a certificate listing is reused (the dashboard polls each second)


class Handlers:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._certs: tuple[float, list[dict[str, Any]]] = (0.0, [])

    async def dispatch(self, method: str, path: str, query: dict[str, list[str]], request: Request) -> Response:
        if path in STATIC:
            return self._static(method, *STATIC[path])
        if path.startswith("/upstreams/") and path.endswith(("/drain", "/undrain")):
            if method != "POST":
                return _not_allowed("POST")
            target, _, action = path[len("/upstreams/"):].rpartition("/")
            return self.drain(target, action == "drain")
        gets = {"/config": lambda: self.config(query), "/certificates": lambda: as_json(self.certificates()),
                "/upstreams": lambda: as_json(self.upstreams())}
        if path in gets:
            return gets[path]() if method == "GET" else _not_allowed("GET")
        if path in ("/metrics", "/api/dashboard"):
            if method != "GET":
                return _not_allowed("GET")
            return await (self.metrics() if path == "/metrics" else self.dashboard())
        if path == "/load":
            return await self.load(request) if method == "POST" else _not_allowed("POST")
        return text(404, f"no such admin endpoint: {path}")

    def _static(self, method: str, name: str, content_type: str) -> Response:
        if method != "GET":
            return _not_allowed("GET")
        body = resources.files("porch.server.admin").joinpath("static", name).read_bytes()
        # The page runs only its own script: no inline code, nothing from elsewhere.
        csp = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        return Response(200, body, content_type, headers=[("Content-Security-Policy", csp)])

    # -- config ------------------------------------------------------------------

    def config(self, query: dict[str, list[str]]) -> Response:
        """The config served: `porch check --dump`'s porch.toml (the default, or
        ?format=toml), the typed model as JSON (?format=json) or `porch check`'s report
        (?format=text).  The token is never shown; admin_token_file names a file only."""
        fmt = query.get("format", ["toml"])[0]
        if fmt == "toml":  # loads back to the same model: POST /load takes it as is
            from porch.config.dump import dump

            return Response(200, dump(self.sup.config, hide_token=True), "application/toml; charset=utf-8")
        if fmt == "text":
            from porch.config.describe import describe

            return Response(200, describe(self.sup.config) + "\n")
        if fmt != "json":
            return text(400, f"format={fmt}: not a format of /config; use toml (the default), json or text")
        model = _plain(dataclasses.asdict(self.sup.config))
        model["porch"].pop("admin_token", None)
        return as_json(model)

    async def load(self, request: Request) -> Response:
        from porch.config.toml import loads
        from porch.server.supervisor import ReloadError

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            body = bytes(request.body).decode("utf-8")
        except UnicodeDecodeError as err:
            return text(400, f"byte {err.start} of the body is not UTF-8; config files are UTF-8")
        front = load_kind(kind, body)
        if front is None:
            return text(415, "POST /load takes a porch.toml (Content-Type: application/toml), an nginx file"
                        " (text/x-nginx-conf) or an Apache file (text/x-apache-conf), or text/plain found"
                        f" from its content as porch check does, not {kind}")
        path = self.sup.path
        try:
            # Relative paths in it start where the file porch was started with is; its
            # problems are located in the body ("POST /load:12: ..."), not in that file.
            if front == "toml":
                config = loads(body, LOAD_SOURCE, base=os.path.dirname(path))
            else:
                config = load_foreign(front, body, path, self.sup.config)
            self.sup.check_reloadable(config)
        except ConfigError as err:
            return text(400, invalid_config_message(LOAD_SOURCE, err))
        except ReloadError as err:
            return text(400, str(err))
        except OSError as err:
            return text(500, f"cannot read the body as a file beside {path}: {err.strerror or err}")
        ok, message = await self.sup.reload(config)
        return text(200, message) if ok else text(500, f"reload failed, still serving the previous config: {message}")

    # -- certificates and upstreams ------------------------------------------------

    def certificates(self) -> list[dict[str, Any]]:
        at, found = self._certs
        if time.monotonic() - at < CERTS_EVERY and found:
            return found
        found = certificates(self.sup.config, self.sup.storage)
        self._certs = (time.monotonic(), found)
        return found

    def upstreams(self, live: dict[str, Any] | None = None, counts: collect.Counts | None = None) -> list[dict]:
        """Each target of the config: where it is used, its state, in flight, failures."""
        health = self._health()
        if live is None or counts is None:  # the numbers of the last scrape, not asked again
            known = self.sup.snapshots()
            live, counts = collect.gauges(known), self.sup.retired.merged(known)
        out: dict[str, dict[str, Any]] = {}
        for site in self.sup.config.sites:
            for route in site.routes:
                for t in route.upstreams:
                    entry = out.setdefault(t.address, {"address": t.address, "url": t.url, "routes": [],
                                                       "pooled": False, "checked": False})
                    entry["routes"].append(f"{site.name}{route.path}")
                    entry["pooled"] |= len(route.upstreams) > 1
                    entry["checked"] |= route.pool.health is not None
        for address, entry in out.items():
            probe = health.states.get(address) if health else None
            seen = live["targets"].get(address, {})
            drained = health is not None and address in health.drained
            down = probe is not None and not probe.up
            entry.update(
                state="drained" if drained else "down" if down else "failing" if seen.get("out_for") else "up",
                health_error=probe.last_error if probe is not None and probe.last_error else None,
                in_flight=seen.get("active", 0), failures=counts.failures.get(address, 0),
                last_error=seen.get("last_error") or None)
        return list(out.values())

    def drain(self, target: str, on: bool) -> Response:
        health = self._health()
        found = [u for u in self.upstreams() if target in (u["address"], u["url"], u["address"].split("://", 1)[1])]
        if not found:
            known = ", ".join(u["address"] for u in self.upstreams()) or "none"
            return text(404, f"no upstream {target!r} in the config (targets: {known})")
        entry = found[0]
        if on and not entry["pooled"]:
            return text(400, f"{entry['address']} is the only target of {', '.join(entry['routes'])}: draining it"
                             " would leave no upstream; add another target to the route's proxy list first")
        if health is None:
            return text(503, "the health service is not running")
        health.drain(entry["address"], on)
        word = "drained: no new requests go to it" if on else "back in rotation"
        return text(200, f"{entry['address']} {word} (workers see it within a second)")

    def _health(self):
        from porch.upstream.prober import HealthService

        return next((s for s in self.sup.services if isinstance(s, HealthService)), None)

    # -- numbers -----------------------------------------------------------------

    async def _numbers(self) -> tuple[collect.Counts, dict[str, Any]]:
        snapshots = await self.sup.gather()
        return self.sup.retired.merged(snapshots), collect.gauges(snapshots)

    async def metrics(self) -> Response:
        counts, live = await self._numbers()
        extra = {"workers": sum(1 for w in self.sup.workers if w is not None and w.serving),
                 "upstreams": self.upstreams(live, counts), "certificates": self.certificates(),
                 "reloads": self.sup.reloads}
        return Response(200, collect.exposition(counts, live, extra), "text/plain; version=0.0.4; charset=utf-8")

    async def dashboard(self) -> Response:
        counts, live = await self._numbers()
        config = self.sup.config
        sites = [{"name": s.name, "hosts": list(s.hosts), "tls": s.tls if isinstance(s.tls, str) else "files",
                  "routes": [{"path": r.path, "proxy": [t.url for t in r.upstreams]} for r in s.routes]}
                 for s in config.sites]
        return as_json({
            "time": time.time(), "pid": os.getpid(), "config": config.source, "sites": sites,
            "workers": sum(1 for w in self.sup.workers if w is not None and w.serving),
            "requests": counts.requests(), "errors": counts.requests("5xx"), "client_errors": counts.requests("4xx"),
            "connections": live["connections"], "streams": live["streams"], "tunnels": live["tunnels"],
            "certificates": self.certificates(), "upstreams": self.upstreams(live, counts),
            "recent_errors": [{"time": t, "level": lvl, "line": line, "pid": pid}
                              for t, lvl, line, pid in sorted(self.sup.recent)[-30:]],
            "reloads": self.sup.reloads,
        })


def certificates(config, storage) -> list[dict[str, Any]]:
    """`porch certs`' rows as JSON (tls/certs_cli.py reads storage and the files)."""
    if not any(site.tls != "off" for site in config.sites):
        return []  # nothing served over HTTPS (and no cryptography to import)
    from porch.tls import certs_cli, certstore

    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for row, error in certs_cli.rows(config, storage, now):
        names, source, issuer, not_after, left, state = row
        when = certstore.parse_iso(not_after) if not_after != "-" else None
        seconds = (when - now).total_seconds() if when else None
        out.append({"names": names.split(", "), "source": source, "issuer": None if issuer == "-" else issuer,
                    "not_after": None if not_after == "-" else not_after, "left": left,
                    "days_left": None if seconds is None else round(seconds / 86400, 2),
                    "expires_in_seconds": seconds, "state": state, "error": error})
    return out


def _plain(value: Any) -> Any:
    """A dataclasses.asdict() tree as JSON values (tuples as lists, sets sorted)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    return value


def _not_allowed(allowed: str) -> Response:
    return Response(405, f"use {allowed}\n", headers=[("Allow", allowed)])


def load_kind(content_type: str, body: str) -> str | None:
    """"toml", "nginx" or "apache" for a POST /load body, from its Content-Type or, for a
    plain or missing one, from its content as `porch check` does for files; None: refused."""
    if content_type in TOML_TYPES:
        return "toml"
    if content_type in NGINX_TYPES:
        return "nginx"
    if content_type in APACHE_TYPES:
        return "apache"
    if content_type not in SNIFFED_TYPES:
        return None
    from porch.config.apache import looks_like_apache
    from porch.config.nginx import looks_like_nginx

    if looks_like_apache(body[:65536]):
        return "apache"
    return "nginx" if looks_like_nginx(body[:65536]) else "toml"


_TEMP = re.compile(r"(?:[^\s:]*/)?\.porch-load-[A-Za-z0-9_]+\.conf")
# Porch-only settings an nginx or Apache file has no directive for: the running config's stay.
KEPT_SETTINGS = ("admin", "admin_token", "admin_token_file")


def load_foreign(front: str, body: str, running_path: str, running: Any) -> Any:
    """The model of an nginx or Apache file sent as a body: read by the same front-end as
    a file, from a hidden copy beside the running config, so that its relative includes
    start where they would for that file (nginx's prefix, httpd's ServerRoot); messages
    name it "POST /load".  The admin API's settings and the state_dir stay as they are."""
    from porch.config import apache, nginx
    from porch.config.frontend import STATE_DIR_ENV

    folder = os.path.dirname(os.path.abspath(running_path))
    fd, temp = tempfile.mkstemp(prefix=".porch-load-", suffix=".conf", dir=folder)
    saved = os.environ.get(STATE_DIR_ENV)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.environ[STATE_DIR_ENV] = running.porch.state_dir  # read by the front-end; no await here
        try:
            config = (nginx if front == "nginx" else apache).load(temp)
        except ConfigError as err:
            raise ConfigError([_TEMP.sub(LOAD_SOURCE, p) for p in err.problems],
                              [_TEMP.sub(LOAD_SOURCE, o) if o else o for o in err.origins]) from None
    finally:
        if saved is None:
            os.environ.pop(STATE_DIR_ENV, None)
        else:
            os.environ[STATE_DIR_ENV] = saved
        os.unlink(temp)
    kept = {k: getattr(running.porch, k) for k in KEPT_SETTINGS}
    return dataclasses.replace(config, porch=dataclasses.replace(config.porch, **kept), source=LOAD_SOURCE,
                               warnings=tuple(_TEMP.sub(LOAD_SOURCE, w) for w in config.warnings))
